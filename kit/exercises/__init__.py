"""Exercises: implement a core piece yourself, then `check_<name>(your_fn)` says what passed and what did not.

Each notebook ends with an "Exercises" section: a stub that raises `NotImplementedError` with a
hint, and a cell that calls the check. A check runs your function on several small cases against
the kit's own code, prints one line per case (expected against what came back, for a failure),
and returns a result that is truthy only when every case passed. A stub is reported as "not
implemented yet" and never stops the notebook. Solutions: `solutions/exercises.py`.

| notebook | check | your function |
|---|---|---|
| 01 | `check_next_token_loss` | `next_token_loss(logits, input_ids)`: mean next-token cross-entropy |
| 01 | `check_train_step` | `train_step(model, batch, optimizer)`: one optimizer step, returns the loss |
| 01 | `check_sampling_probs` | `sampling_probs(logits, temperature, top_k)`: the distribution to sample from |
| 02 | `check_is_usable` | `is_usable(example)`: one validation rule |
| 02 | `check_loss_mask` | `loss_mask(ids, assistant_id, end_id)`: which rendered tokens carry loss |
| 02 | `check_sft_loss` | `sft_loss(logits, input_ids, loss_mask)`: the loss on the reply tokens only |
| 03 | `check_lora_forward` | `lora_forward(x, W, A, B, alpha, r)`: `W x + (alpha/r) B A x` |
| 03 | `check_accumulate_gradients` | `accumulate_gradients(model, micro_batches)`: token-normalised accumulation |
| 04 | `check_dpo_loss` | `dpo_loss(...)`: DPO with its SFT anchor, per pair |
| 04 | `check_refusal_rates` | `refusal_rates(replies, harmful)`: refusal and over-refusal rates |
| 05 | `check_should_stop` | `should_stop(step, max_steps, loss, first_loss)`: the sweep's early stop |
| 05 | `check_paired_bootstrap` | `paired_bootstrap(a, b, ...)`: an interval for a difference of two runs |

This package sits on the top layer (beside `kit.widgets`): it may use every other layer.

Example:
    >>> import kit.exercises
    >>> result = kit.exercises.check_lora_forward(lambda x, W, A, B, alpha, r: x @ W.T)  # doctest: +SKIP
    lora_forward: 0 of 4 cases passed
      NO  r=4, alpha=8 (scale 2), a batch of 3 vectors of 6
           output: expected tensor(...), got tensor(...)
    ...
    >>> bool(result)                                                                        # doctest: +SKIP
    False
"""

from .checking import Case, CheckResult, run_check
from .nb01 import check_next_token_loss, check_sampling_probs, check_train_step
from .nb02 import check_is_usable, check_loss_mask, check_sft_loss
from .nb03 import check_accumulate_gradients, check_lora_forward
from .nb04 import check_dpo_loss, check_refusal_rates
from .nb05 import check_paired_bootstrap, check_should_stop

# notebook -> (check name, the learner's function name), in the order the notebooks present them
EXERCISES = {
    "01": [("check_next_token_loss", "next_token_loss"), ("check_train_step", "train_step"),
           ("check_sampling_probs", "sampling_probs")],
    "02": [("check_is_usable", "is_usable"), ("check_loss_mask", "loss_mask"), ("check_sft_loss", "sft_loss")],
    "03": [("check_lora_forward", "lora_forward"), ("check_accumulate_gradients", "accumulate_gradients")],
    "04": [("check_dpo_loss", "dpo_loss"), ("check_refusal_rates", "refusal_rates")],
    "05": [("check_should_stop", "should_stop"), ("check_paired_bootstrap", "paired_bootstrap")],
}

__all__ = ["EXERCISES", "Case", "CheckResult", "check_accumulate_gradients", "check_dpo_loss", "check_is_usable",
           "check_lora_forward", "check_loss_mask", "check_next_token_loss", "check_paired_bootstrap",
           "check_refusal_rates", "check_sampling_probs", "check_sft_loss", "check_should_stop", "check_train_step",
           "run_check"]
