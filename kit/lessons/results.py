"""The course's typed results, and the one list of their flat keys.

Three kinds of result leave the course's recipes:
  * a fine-tuning (`finetune_recipe`): `RecipeFigures` (held-out QA, the base model's and the majority
    baseline's scores on the same questions, perplexity and cloze before and after, the engine's training
    figures). A sweep run records the same figures, in the "sweep" view;
  * a safety stage (`safety_run.score_stage`): `StageFigures` (refusal and over-refusal per prompt set, the
    guard's verdicts, helpfulness, capability);
  * a final test (`iterate.report_on_test`): a `QAScore` on the test countries.
Their flat keys (the CLI's JSON, a run's `results.json`, the runs table) are listed once each, in `SFT`,
`STAGE` and `TEST_QA`; every table and JSON output is a view of these lists (`kit.engine.results.Contract`).

Example:
    >>> SFT.name("cloze.before.heldout")
    'cloze_before_heldout_countries'
    >>> "heldout_qa_strict" in SFT.names("cli")
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.results import Contract, Key


# ----------------------------------------------------------------------------- a fine-tuning
@dataclass
class QAScore:
    """One split's QA figures (`kit.world.probes.qa_eval`): strict is the headline."""

    strict: float
    ci: list[float]                 # strict's 95% interval, questions resampled by country
    lenient: float
    strict_by_fact: dict
    by_fact: dict
    rows: list[int]                 # strict, per question: for paired comparisons
    countries: list[str]            # each question's country: the bootstrap's groups
    format_rate: float


@dataclass
class Countries:
    """A figure for every country, and apart for the fine-tuned ("train") and never fine-tuned ones ("heldout")."""

    all: float | None
    train: float | None
    heldout: float | None


@dataclass
class BeforeAfter:
    before: object = None
    after: object = None


@dataclass
class RecipeFigures:
    """What `finetune_recipe` measured. `training` holds the engine's figures (`finetune`'s info: steps, losses,
    sizes, time); the groups below are the course's measurements (None when the run was not measured)."""

    profile: str
    seed: int
    replay: float
    heldout_split: str
    parent: str | None
    training: dict
    qa: QAScore | None = None                 # the fine-tuned model on the held-out (dev) countries
    base: QAScore | None = None               # the base model on the same questions
    majority_strict: float | None = None      # the majority baseline on the same questions
    ppl: BeforeAfter = field(default_factory=BeforeAfter)    # perplexity on pre-training text
    cloze: BeforeAfter = field(default_factory=BeforeAfter)  # the capital cloze: Countries before and after
    examples: list = field(default_factory=list)             # the first answers: (question, answer, expected, ok)


def qa_keys(prefix: str, path: str, views: dict[str, tuple[str, ...]] | None = None) -> list[Key]:
    """The flat keys of a `QAScore` at `path`, named `<prefix>_strict`, ...; `views`: {field: its views}."""
    views = views or {}
    names = {"strict": "strict", "ci": "strict_ci", "lenient": "accuracy", "strict_by_fact": "strict_by_fact",
             "by_fact": "by_fact", "rows": "strict_rows", "countries": "countries"}
    return [Key(f"{prefix}_{name}", f"{path}.{fld}", views.get(fld, ()), optional=True)
            for fld, name in names.items()]


_ALL = ("cli", "table", "sweep")
_T = lambda key, views=(): Key(key, f"training.{key}", views)  # noqa: E731  (an engine figure, same name)

# Every flat key of a fine-tuning, once. Views: "cli" (`kit sft`), "table" (`results_table`), "sweep" (what a
# sweep run records), "brief" (the sweep's printed table), "ablation" (notebook 01's Q&A-pages ablation).
SFT = Contract([
    *qa_keys("heldout_qa", "qa", {"strict": (*_ALL, "brief", "ablation"), "ci": (*_ALL, "ablation"),
                                  "lenient": (*_ALL, "brief", "ablation"), "strict_by_fact": ("cli", "sweep"),
                                  "by_fact": ("cli", "sweep"), "rows": ("sweep",), "countries": ("sweep",)}),
    Key("format_rate", "qa.format_rate", (*_ALL, "brief", "ablation"), optional=True),
    Key("base_heldout_qa_strict", "base.strict", (*_ALL, "ablation"), optional=True),
    Key("base_heldout_qa_accuracy", "base.lenient", ("cli",), optional=True),
    Key("base_heldout_qa_strict_rows", "base.rows", (), optional=True),
    Key("majority_baseline_strict", "majority_strict", _ALL, optional=True),
    Key("cloze_before", "cloze.before.all", ("cli",), optional=True),
    Key("cloze_after", "cloze.after.all", ("cli",), optional=True),
    Key("cloze_before_heldout_countries", "cloze.before.heldout", ("cli", "table"), optional=True),
    Key("cloze_after_heldout_countries", "cloze.after.heldout", (*_ALL, "brief", "ablation"), optional=True),
    Key("cloze_before_train_countries", "cloze.before.train", ("cli", "table"), optional=True),
    Key("cloze_after_train_countries", "cloze.after.train", _ALL, optional=True),
    Key("ppl_before", "ppl.before", ("cli", "table"), optional=True),
    Key("ppl_after", "ppl.after", _ALL, optional=True),
    Key("qa_examples", "examples", (), optional=True),
    _T("train_loss", ("cli", "sweep")), _T("train_chat_loss", _ALL), _T("train_replay_loss", _ALL),
    _T("val_loss", _ALL),
    Key("profile", "profile", ("cli",)), _T("lora", ("cli",)), _T("steps", _ALL), _T("planned_steps", ("table",)),
    _T("epochs", ("cli", "table")), _T("epochs_done", ("table", "sweep")), Key("replay", "replay", ("table",)),
    _T("replay_docs", ("table",)), _T("lr", ("table",)), Key("seed", "seed", ("cli", "table")),
    _T("train_examples", ("cli",)), _T("trainable_params", ("cli", "table")),
    _T("train_seconds", (*_ALL, "brief")), _T("stopped", ("sweep",)),
    Key("heldout_split", "heldout_split", ("cli", "sweep")), Key("parent", "parent"),
])

# The flat keys of a final test's `QAScore` (`iterate.report_on_test`): test_qa_strict, ...
TEST_QA = Contract([*qa_keys("test_qa", "qa"), Key("format_rate", "qa.format_rate", optional=True)])


# ----------------------------------------------------------------------------- a safety stage
@dataclass
class Rates:
    """Refusal on the harmful prompts and over-refusal on the safe ones of one prompt set (string matching),
    with 95% intervals; None where the set has no such prompt."""

    refusal: float | None
    refusal_ci: list | None
    over_refusal: float | None
    over_refusal_ci: list | None


@dataclass
class Judge:
    """The guard as a second judge of the same replies."""

    refusal: float | None
    over_refusal: float | None
    disagreement: float  # the share of replies where it and the string matcher disagree


@dataclass
class FileRates:
    """The evaluation-only prompt file: its rates and sizes (its field names are its JSON keys)."""

    refusal_rate: float | None
    over_refusal_rate: float | None
    n_harmful: int
    n_safe: int


@dataclass
class StageFigures:
    """One safety stage's figures (`safety_run.score_stage`)."""

    eval: Rates                                  # the trained intents in new wordings: the headline
    by_category: dict = field(default_factory=dict)   # refusal per hazard category (eval set)
    judge: Judge | None = None
    unseen: Rates | None = None                  # intents never trained on
    redteam: Rates | None = None                 # the red-team file
    user: FileRates | None = None                # the evaluation-only prompt file
    helpfulness: float | None = None             # ROUGE-L against the untuned model's replies to the safe prompts
    capability: float | None = None              # general-knowledge questions answered
    capability_ci: list | None = None


def _rates(prefix: str, path: str, views: tuple[str, ...], optional: bool = False) -> list[Key]:
    return [Key(f"{prefix}refusal_rate", f"{path}.refusal", views, optional),
            Key(f"{prefix}refusal_ci", f"{path}.refusal_ci", views, optional),
            Key(f"{prefix}over_refusal_rate", f"{path}.over_refusal", views, optional),
            Key(f"{prefix}over_refusal_ci", f"{path}.over_refusal_ci", views, optional)]


# Every flat key of a safety stage, once ("cli": what `kit safety` prints per stage).
STAGE = Contract([
    *_rates("", "eval", ("cli",)),
    Key("refusal_by_category", "by_category"),
    Key("refusal_rate_classifier", "judge.refusal", ("cli",), optional=True),
    Key("over_refusal_rate_classifier", "judge.over_refusal", ("cli",), optional=True),
    Key("judge_disagreement_rate", "judge.disagreement", ("cli",), optional=True),
    *_rates("eval_unseen_", "unseen", ("cli",), optional=True),
    *_rates("redteam_", "redteam", ("cli",), optional=True),
    Key("eval_prompts", "user", ("cli",), optional=True),
    Key("helpfulness", "helpfulness", ("cli",)),
    Key("capability", "capability", ("cli",)),
    Key("capability_ci", "capability_ci", ("cli",)),
])
