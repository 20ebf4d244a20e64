"""Everything a user (or a model trained on a user's data) writes is shown as text in the widgets, never as HTML."""

from kit.widgets.panel import SFTPanel
from kit.widgets.redteam import RedTeam, RedTeamWidget

EVIL = "<img src=x onerror=alert(1)>"


def test_red_team_view_escapes_prompt_answers_and_names(tmp_path):
    rt = RedTeam({"<b>model</b>": lambda ps: [EVIL] * len(ps)}, None, tmp_path / "rt.jsonl")
    w = RedTeamWidget(rt)
    w.prompt.value = f"say {EVIL}"
    w.ask_button.click()
    assert "<img" not in w.view.value and "<b>model" not in w.view.value and "&lt;img" in w.view.value


def test_panel_status_and_samples_are_escaped(tmp_path, tok):
    train = [{"messages": [{"role": "user", "content": EVIL}, {"role": "assistant", "content": "ok"}]}]
    panel = SFTPanel(model=object(), tokenizer=tok, train=train, out_dir=tmp_path / "p<script>")
    box = panel.widget()
    panel.samples, panel.error = [f"{EVIL} → {EVIL}"], ValueError(f"bad {EVIL}")
    panel._refresh()
    shown = panel._w["status"].value + panel._w["samples"].value
    assert box is not None and "<img" not in shown and "&lt;img" in shown
