"""Every exercise check passes its solution, fails the notebook's stub (showing the hint) and a common wrong answer."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kit.exercises as ex
from kit.engine.losses import causal_lm_loss
from kit.world.safety import looks_like_refusal
from solutions import exercises as sol

ROOT = Path(__file__).resolve().parent.parent
ALL = [(nb, check, fn) for nb, rows in ex.EXERCISES.items() for check, fn in rows]


def notebook(nb: str) -> list[dict]:
    path = next((ROOT / "notebooks").glob(f"{nb}_*.ipynb"))
    return json.loads(path.read_text())["cells"]


def stub_and_check_cells(nb: str, fn: str) -> tuple[str, str]:
    """The source of the stub cell defining `fn` and of the check cell right after it."""
    cells = notebook(nb)
    for i, c in enumerate(cells):
        src = "".join(c["source"])
        if c["cell_type"] == "code" and f"def {fn}(" in src and "NotImplementedError" in src:
            return src, "".join(cells[i + 1]["source"])
    raise AssertionError(f"notebook {nb} has no stub cell defining {fn}()")


@pytest.mark.parametrize("nb,check,fn", ALL, ids=[c for _, c, _ in ALL])
def test_the_solution_passes(nb, check, fn, capsys):
    result = getattr(ex, check)(getattr(sol, fn))
    assert result, result.message
    assert result.passed and not result.failed and len(result.passed) == result.total >= 3
    assert f"{result.total} of {result.total} cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("nb,check,fn", ALL, ids=[c for _, c, _ in ALL])
def test_the_notebook_stub_fails_with_its_hint(nb, check, fn, capsys):
    stub, check_cell = stub_and_check_cells(nb, fn)
    assert check_cell.strip() == f"kit.exercises.{check}({fn})"  # the check cell right after the stub
    space: dict = {}
    exec(compile(stub, f"<notebook {nb} stub {fn}>", "exec"), space)
    said = ast.literal_eval(stub.split("raise NotImplementedError(")[1].rsplit(")", 1)[0])
    result = getattr(ex, check)(space[fn])  # must not raise: the notebook goes on
    assert not result
    assert result.not_implemented == said and said
    out = capsys.readouterr().out
    assert "not implemented yet" in out and said in out and result.hint in out
    assert repr(result) == f"<check {fn}: not implemented yet>"


# ----------------------------------------------------------------------------- common wrong answers
def loss_without_shift(logits, input_ids):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids.reshape(-1))


def loss_summed(logits, input_ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="sum")


def step_without_zero_grad(model, batch, optimizer):
    loss_sum, n = causal_lm_loss(model, batch)
    (loss_sum / n).backward()
    optimizer.step()
    return (loss_sum / n).item()


def step_on_mean_over_all_positions(model, batch, optimizer):
    optimizer.zero_grad()
    logits = model(input_ids=batch["input_ids"]).logits
    loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten().clamp(min=0))  # IGNORE rows counted
    loss.backward()
    optimizer.step()
    return loss.item()


def step_without_step(model, batch, optimizer):
    optimizer.zero_grad()
    loss_sum, n = causal_lm_loss(model, batch)
    (loss_sum / n).backward()
    return (loss_sum / n).item()


def temperature_after_softmax(logits, temperature=1.0, top_k=0):
    return sol.sampling_probs(logits, 1.0, top_k) / max(temperature, 1e-9)


def top_k_off_by_one(logits, temperature=1.0, top_k=0):
    return sol.sampling_probs(logits, temperature, top_k + 1 if top_k else 0)


def usable_without_strip(example):
    msgs = example.get("messages") if isinstance(example, dict) else None
    return bool(msgs) and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                              and isinstance(m.get("content"), str) and m["content"] != "" for m in msgs) \
        and any(m["role"] == "assistant" for m in msgs)


def usable_strict_about_warnings(example):
    if not sol.is_usable(example):
        return False
    roles = [m["role"] for m in example["messages"]]
    return all(a != b for a, b in zip(roles, roles[1:]))  # treats a warning as an error


def mask_including_the_marker(ids, assistant_id, end_id):
    mask = sol.loss_mask(ids, assistant_id, end_id)
    return [1 if t == assistant_id else m for t, m in zip(ids, mask)]


def mask_without_end(ids, assistant_id, end_id):
    return [0 if t == end_id else m for t, m in zip(ids, sol.loss_mask(ids, assistant_id, end_id))]


def mask_last_reply_only(ids, assistant_id, end_id):
    last = max(i for i, t in enumerate(ids) if t == assistant_id)
    return [m if i > last else 0 for i, m in enumerate(sol.loss_mask(ids, assistant_id, end_id))]


def sft_loss_mean_over_all_positions(logits, input_ids, loss_mask):
    return loss_summed(logits, input_ids) / input_ids[:, 1:].numel()  # prompt and padding counted too


def sft_loss_unshifted_mask(logits, input_ids, loss_mask):
    per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none")
    keep = loss_mask[:, :-1].reshape(-1).float()  # the mask of the INPUT token: off by one
    return (per * keep).sum() / keep.sum()


def lora_alpha_not_over_r(x, W, A, B, alpha, r):
    return x @ W.T + alpha * (x @ A.T) @ B.T


def lora_update_only(x, W, A, B, alpha, r):
    return (alpha / r) * (x @ A.T) @ B.T


def accumulate_mean_of_means(model, micro_batches):
    for mb in micro_batches:
        loss_sum, n = causal_lm_loss(model, mb)
        (loss_sum / n / len(micro_batches)).backward()


def accumulate_sum(model, micro_batches):
    for mb in micro_batches:
        causal_lm_loss(model, mb)[0].backward()


def dpo_without_reference(pc, pr, rc, rr, n, beta, w):
    return -F.logsigmoid(beta * (pc - pr)) - w * pc / n


def dpo_anchor_per_reply(pc, pr, rc, rr, n, beta, w):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))) - w * pc  # not normalised by the reply's tokens


def dpo_sign_flipped(pc, pr, rc, rr, n, beta, w):
    return -F.logsigmoid(beta * ((pr - rr) - (pc - rc))) - w * pc / n


def rates_over_all_prompts(replies, harmful):
    refused = [looks_like_refusal(r) for r in replies]
    n = len(replies)
    return {"refusal_rate": sum(x for x, h in zip(refused, harmful) if h) / n,
            "over_refusal_rate": sum(x for x, h in zip(refused, harmful) if not h) / n}


def rates_with_naive_matcher(replies, harmful):
    refused = ["can't" in r or "cannot" in r or "won't" in r for r in replies]  # case and apostrophe sensitive
    h = [x for x, k in zip(refused, harmful) if k]
    s = [x for x, k in zip(refused, harmful) if not k]
    return {"refusal_rate": sum(h) / max(1, len(h)), "over_refusal_rate": sum(s) / max(1, len(s))}


def stop_ignoring_nan(step, max_steps, loss, first_loss, after=0.3, ratio=0.97):
    return step >= after * max_steps and loss >= ratio * first_loss  # NaN >= x is False: never stops


def stop_strictly_above(step, max_steps, loss, first_loss, after=0.3, ratio=0.97):
    if not math.isfinite(loss):
        return True
    return step > after * max_steps and loss > ratio * first_loss


def bootstrap_unpaired(a, b, n_resamples=10000, seed=0, level=0.95):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    ia = torch.randint(0, len(a), (n_resamples, len(a)), generator=g)
    ib = torch.randint(0, len(b), (n_resamples, len(b)), generator=g)  # other questions for b: not paired
    means = b[ib].mean(1) - a[ia].mean(1)
    tail = (1 - level) / 2
    return torch.quantile(means, tail).item(), torch.quantile(means, 1 - tail).item()


def bootstrap_of_the_differences(a, b, n_resamples=10000, seed=0, level=0.95):
    d = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
    tail = (1 - level) / 2
    return torch.quantile(d, tail).item(), torch.quantile(d, 1 - tail).item()  # spread of d, not of its mean


WRONG = [
    ("check_next_token_loss", loss_without_shift, "forgot the shift"),
    ("check_next_token_loss", loss_summed, "sum instead of mean"),
    ("check_train_step", step_without_zero_grad, "gradients pile up"),
    ("check_train_step", step_on_mean_over_all_positions, "mean over all positions"),
    ("check_train_step", step_without_step, "no optimizer step"),
    ("check_sampling_probs", temperature_after_softmax, "temperature after the softmax"),
    ("check_sampling_probs", top_k_off_by_one, "top-k keeps one too many"),
    ("check_is_usable", usable_without_strip, "spaces count as content"),
    ("check_is_usable", usable_strict_about_warnings, "a warning taken for an error"),
    ("check_loss_mask", mask_including_the_marker, "the role marker learned"),
    ("check_loss_mask", mask_without_end, "never learns to stop"),
    ("check_loss_mask", mask_last_reply_only, "only the last reply"),
    ("check_sft_loss", sft_loss_mean_over_all_positions, "mean over all positions"),
    ("check_sft_loss", sft_loss_unshifted_mask, "mask of the input token"),
    ("check_lora_forward", lora_alpha_not_over_r, "alpha instead of alpha / r"),
    ("check_lora_forward", lora_update_only, "forgot the frozen W x"),
    ("check_accumulate_gradients", accumulate_mean_of_means, "mean of the micro-batch means"),
    ("check_accumulate_gradients", accumulate_sum, "no normalisation"),
    ("check_dpo_loss", dpo_without_reference, "no reference model"),
    ("check_dpo_loss", dpo_anchor_per_reply, "anchor not per token"),
    ("check_dpo_loss", dpo_sign_flipped, "chosen and rejected swapped"),
    ("check_refusal_rates", rates_over_all_prompts, "one denominator for both"),
    ("check_refusal_rates", rates_with_naive_matcher, "a case-sensitive matcher"),
    ("check_should_stop", stop_ignoring_nan, "NaN never stops"),
    ("check_should_stop", stop_strictly_above, "boundaries off by one"),
    ("check_paired_bootstrap", bootstrap_unpaired, "unpaired resampling"),
    ("check_paired_bootstrap", bootstrap_of_the_differences, "percentiles of the differences"),
]


@pytest.mark.parametrize("check,wrong,why", WRONG, ids=[w for _, _, w in WRONG])
def test_a_common_wrong_answer_fails_and_says_what_was_expected(check, wrong, why, capsys):
    result = getattr(ex, check)(wrong)
    assert not result, f"{check} accepted a wrong answer ({why})"
    assert result.failed and result.not_implemented is None
    out = capsys.readouterr().out
    failed_case, detail = result.failed[0]
    assert f"NO  {failed_case}" in out and detail in out and f"hint: {result.hint}" in out
    assert "expected" in detail or "did not change" in detail or "should contain" in detail
    assert repr(result) == f"<check {result.name}: FAILED>"


def test_every_check_has_a_wrong_answer_in_this_file():
    assert {c for _, c, _ in ALL} <= {c for c, _, _ in WRONG}


def test_a_function_that_crashes_is_reported_with_its_line_and_the_notebook_goes_on(capsys):
    def next_token_loss(logits, input_ids):
        return logits[:, :-1] @ input_ids  # a shape error

    result = ex.check_next_token_loss(next_token_loss)
    assert not result and len(result.failed) == result.total
    assert "raised RuntimeError" in result.failed[0][1] and "logits[:, :-1] @ input_ids" in result.failed[0][1]


def test_calling_the_function_instead_of_passing_it_is_explained():
    result = ex.check_should_stop(True)
    assert not result and "without calling it" in result.failed[0][1]


def test_checks_leave_the_notebooks_random_state_alone():
    state = torch.get_rng_state()
    ex.check_train_step(sol.train_step)
    ex.check_lora_forward(sol.lora_forward)
    ex.check_accumulate_gradients(sol.accumulate_gradients)
    assert torch.equal(state, torch.get_rng_state())
