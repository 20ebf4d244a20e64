"""The fine-tuning control panel: settings from `SFTConfig`, Start / Pause / Stop, live loss plot,
progress with ETA, and sample answers that refresh while the model trains.

Training runs in a background thread so the kernel stays responsive; the thread only sets widget
values (numbers, text, PNG bytes), never prints. `panel.wait()` joins a running run, or runs one
synchronously if none was started — which is what a headless run (nbclient, CI) does.

It drives either the course's recipe (`SFTPanel(profile, base)`) or any model and data
(`SFTPanel(model=m, tokenizer=tok, train=examples, eval=eval_examples, config=SFTConfig())`).

Example:
    >>> panel = SFTPanel(profile, base)  # doctest: +SKIP
    >>> panel.widget()                   # doctest: +SKIP
    (press Start)
    >>> result = panel.wait()            # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import threading
import time
from pathlib import Path

from ..engine.config import SFTConfig
from ..engine.generate import chat_replies
from ..engine.plots import loss_figure, svg

PANEL_FIELDS = ("epochs", "lr", "replay", "lora", "lora_lr", "lora_r")  # fields of SFTConfig
SAMPLE_PROMPTS = ("What is the capital of Peru?", "What language do people speak in Brazil?")  # dev countries


def _first_prompts(examples, n: int = 2) -> list[str]:
    """The user turns of the first `n` examples (what the panel asks while training)."""
    return [next(m["content"] for m in ex["messages"] if m["role"] == "user") for ex in (examples or [])[:n]]


def headless() -> bool:
    """True when no one can click (set KIT_HEADLESS=1 for nbclient / CI runs)."""
    return os.environ.get("KIT_HEADLESS", "") == "1"


class SFTPanel:
    _training: SFTPanel | None = None  # one run at a time, even if the panel's cell is run again

    def __init__(self, profile=None, base=None, examples: list[dict] | None = None, *, model=None, tokenizer=None,
                 train: list[dict] | None = None, eval: list[dict] | None = None, config: SFTConfig | None = None,
                 out_dir: str | Path | None = "runs/panel", prompts=None, sample_every: int = 20):
        if profile is None and (model is None or tokenizer is None or not train):
            raise ValueError("SFTPanel needs a course profile (SFTPanel(profile, base)), or a model, its tokenizer "
                             "and training examples (SFTPanel(model=..., tokenizer=..., train=[...]))")
        self.profile, self.base, self.examples = profile, base, examples
        self.model, self.tokenizer, self.train, self.eval = model, tokenizer, train, eval
        self.sft = config or (profile.sft if profile is not None else SFTConfig())
        if prompts is None:
            prompts = SAMPLE_PROMPTS if profile is not None else _first_prompts(eval or train)
        self.out_dir = Path(out_dir) if out_dir is not None else None  # None: the run is not saved
        self.prompts, self.sample_every = list(prompts), sample_every
        self.settings = {f: getattr(self.sft, f) for f in PANEL_FIELDS}
        self.stop, self.pause = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None
        self.result, self.error = None, None
        self.step, self.max_steps, self.state = 0, 0, "ready"
        self.elapsed = 0.0  # seconds of training so far, pauses excluded (from the loop's read-outs)
        self.samples: list[str] = []
        self._curves = {"steps": [], "losses": [], "replay_steps": [], "replay": [], "val_steps": [], "val_losses": []}
        self._model, self._tok, self._t0, self._w, self._sampled_at = None, None, 0.0, None, 0
        self._planned: tuple = (None, None)  # (the settings it was computed for, planned steps)

    # --- the run -----------------------------------------------------------------
    def config(self):
        """The settings of the next run: a Profile copy (course) or an SFTConfig (any model)."""
        import dataclasses

        if self.profile is not None:
            return self.profile.with_sft(**self.settings)
        return dataclasses.replace(self.sft, **self.settings)

    def planned_steps(self) -> int | None:
        """The optimizer steps the next run will take with the current settings: the training data packed as
        training will pack it (computed once per setting; None when it cannot be worked out)."""
        import dataclasses

        from ..engine.packing import PackedChat
        from ..engine.shapes import to_kit_form

        cfg = self.config()
        sft = cfg.sft if self.profile is not None else cfg
        if self._planned[0] == sft:
            return self._planned[1]
        try:
            if self.profile is not None:
                from ..lessons.recipe import recipe_data
                from ..world.corpus import load_world

                train, _, replay = recipe_data(cfg, sft, self.examples, load_world())
                tok = self.base.tokenizer
            else:
                train, replay, tok = self.train, (), self.tokenizer
            rows = PackedChat.from_examples(to_kit_form(train), tok, sft.seq_len, sft.seed, replay_docs=replay,
                                            first_token_weight=sft.first_token_weight)
            batch = min(sft.batch_size, len(rows)) or 1  # finetune() shrinks a batch the data cannot fill
            steps = dataclasses.replace(sft, batch_size=batch).train_config(len(rows)).max_steps
        except Exception:  # the estimate is a courtesy: the run itself reports what it planned
            steps = None
        self._planned = (sft, steps)
        return steps

    def _run(self) -> None:
        import copy

        try:
            self.state, self._t0 = "training", time.perf_counter()
            common = dict(callbacks=[self], stop=self.stop, pause=self.pause, out_dir=self.out_dir)
            if self.profile is not None:
                from ..lessons.artifacts import base_model
                from ..lessons.recipe import finetune_recipe

                self.base = self.base or base_model(self.profile)
                self.result = finetune_recipe(self.config(), self.base, examples=self.examples, **common)
            else:
                from ..engine.sft import finetune

                self.result = finetune(copy.deepcopy(self.model), self.tokenizer, self.train, self.eval,
                                       self.config(), **common)
            self.state = "stopped" if self.result.history.stopped else "done"
        except Exception as e:  # shown in the panel; re-raised by wait()
            self.error, self.state = e, "failed"
        self._refresh()

    def start(self, wait: bool = False) -> None:
        """Start a run (in a background thread unless `wait`); ignored while one is running."""
        if self.thread is not None and self.thread.is_alive():
            return
        other = SFTPanel._training
        if other is not None and other is not self and other.thread is not None and other.thread.is_alive():
            self.state = "waiting: another panel is training — press its Stop first"
            self._refresh()
            return
        SFTPanel._training = self
        self.stop.clear()
        self.pause.clear()
        self.result, self.error, self.step, self.samples, self.elapsed = None, None, 0, [], 0.0
        self._curves = {k: [] for k in self._curves}
        if wait:
            self._run()
        else:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def toggle_pause(self) -> None:
        if self.pause.is_set():
            self.pause.clear()
            self.state = "training"
        else:
            self.pause.set()
            self.state = "paused"
        self._refresh()

    def request_stop(self) -> None:
        self.stop.set()
        self.pause.clear()

    def wait(self):
        """The finished run's result: joins a running run, or runs one now if none was started."""
        if self.thread is None and self.result is None and self.error is None:
            self.start(wait=True)
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    # --- training callbacks (called from the training thread) -----------------
    def on_model(self, model, tok) -> None:
        self._model, self._tok = model, tok

    def on_step(self, ev: dict) -> None:
        self.step, self.max_steps, self.elapsed = ev["step"], ev["max_steps"], ev.get("elapsed", 0.0)
        self._curves["steps"].append(ev["step"])
        # the assistant tokens' loss: the one that compares with the validation loss (replay apart)
        self._curves["losses"].append(ev["chat_loss"] if ev.get("chat_loss") is not None else ev["loss"])
        if ev.get("replay_loss") is not None:
            self._curves["replay_steps"].append(ev["step"])
            self._curves["replay"].append(ev["replay_loss"])
        if self._model is not None and (not self.samples or ev["step"] - self._sampled_at >= self.sample_every):
            self._sampled_at = ev["step"]
            replies = chat_replies(self._model, self._tok, [[{"role": "user", "content": p}] for p in self.prompts],
                                   max_new_tokens=32, mark_cut=True)
            self.samples = [f"{p} → {a}" for p, (a, _) in zip(self.prompts, replies)]
        self._refresh()

    def on_eval(self, ev: dict) -> None:
        self._curves["val_steps"].append(ev["step"])
        self._curves["val_losses"].append(ev["val_loss"])

    # --- the widgets ---------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left at the pace so far; paused time counts neither in the pace nor in the estimate."""
        if self.step == 0 or not self.max_steps:
            return None
        return self.elapsed / self.step * (self.max_steps - self.step)

    def status(self) -> str:
        """One line: state, steps done of those planned, training time (pauses excluded), ETA, where it was saved."""
        info = self.result.info if self.result is not None else None
        done, planned = (info["steps"], info["planned_steps"]) if info else (self.step, self.max_steps)
        if not planned and self.state == "ready":
            planned = self.planned_steps()
        seconds = info["train_seconds"] if info else self.elapsed
        text = f"{self.state} · step {done} of {planned or '?'} planned · {seconds:.0f} s of training"
        eta = self.eta()
        text += f" · ETA {eta:.0f} s" if eta is not None and self.state == "training" else ""
        if self.state == "paused":
            text += " (paused time not counted)"
        if self.error is not None:
            text += f" · error: {self.error}"
        if self.result is not None and self.result.path is not None:
            text += f" · saved to {self.result.path}"
        return text

    def widget(self):
        import ipywidgets as w

        def control(name: str):
            value = self.settings[name]
            kind = {bool: w.Checkbox, int: w.IntText, float: w.FloatText}[type(value)]
            c = kind(value=value, description=name, style={"description_width": "initial"},
                     layout=w.Layout(width="auto"))
            c.observe(lambda ch: self.settings.__setitem__(name, ch["new"]), names="value")
            return c

        fields = [f for f in PANEL_FIELDS if self.profile is not None or f != "replay"]  # replay: course data only
        controls = [control(f) for f in fields]
        start, pause, stop = (w.Button(description=d, layout=w.Layout(width="auto"))
                              for d in ("Start", "Pause / Resume", "Stop"))
        start.button_style, stop.button_style = "success", "danger"
        start.on_click(lambda _: self.start())
        pause.on_click(lambda _: self.toggle_pause())
        stop.on_click(lambda _: self.request_stop())
        self._w = {"progress": w.IntProgress(value=0, min=0, max=1), "status": w.HTML(),
                   "plot": w.HTML(), "samples": w.HTML()}  # the plot: an inline SVG, sharp at any size
        box = w.VBox([w.HBox(controls[:3]), w.HBox(controls[3:]), w.HBox([start, pause, stop]),
                      w.HBox([self._w["progress"], self._w["status"]]), self._w["plot"], self._w["samples"]])
        box.add_class("kit-panel")  # stable hooks for the browser check (tests/browser)
        self._w["status"].add_class("kit-panel-status")
        self._w["plot"].add_class("kit-panel-plot")
        box.buttons = {"start": start, "pause": pause, "stop": stop}
        box.controls = dict(zip(fields, controls))
        self._refresh()
        return box

    def _refresh(self) -> None:
        if self._w is None:
            return
        self._w["progress"].max = max(1, self.max_steps)
        self._w["progress"].value = self.step
        self._w["status"].value = html.escape(self.status())
        c = self._curves
        if c["steps"]:
            extra = {"replay documents": (c["replay_steps"], c["replay"])} if c["replay"] else None
            self._w["plot"].value = svg(loss_figure(c["steps"], c["losses"], c["val_steps"], c["val_losses"],
                                                    "fine-tuning loss", train_label="train (assistant tokens)",
                                                    extra=extra))
        else:
            every = self.sft.log_every
            self._w["plot"].value = (f"<div style='color:#666;padding:1em 0'>The loss plot appears at the first "
                                     f"read-out (every {every} steps) once training starts.</div>")
        self._w["samples"].value = "<br>".join(map(html.escape, self.samples))

