import csv
import json

import pytest
import torch

from kit.engine import pairs_csv, runs, sanitize, sweeps
from kit.engine.chat import check_preference
from kit.engine.config import ModelConfig, TrainConfig
from kit.engine.models import create
from kit.engine.train import History, TokenRows, train

TINY = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64)


def step(i, loss, total=10):
    return {"step": i, "max_steps": total, "loss": loss, "lr": 1e-3, "tokens": 64 * i, "elapsed": 0.1 * i,
            "tokens_per_s": 640.0}


def fake_training(run, losses, val_losses=()):
    """What train() tells its callbacks, without a model: read-outs, validation passes, the end."""
    for i, loss in enumerate(losses, start=1):
        if run.stop.is_set():
            break
        run.on_step(step(i, loss, len(losses)))
    for i, v in enumerate(val_losses, start=1):
        run.on_eval({"step": i * 2, "val_loss": v})
    run.on_end(History(stopped=run.stop.is_set()))


# ----------------------------------------------------------------------------- recording
def test_crashed_run_is_recorded_and_the_error_propagates(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with runs.Run("bad", config={"lr": 0.1}, datasets={"train": [{"a": 1}]}, root=tmp_path) as run:
            run.on_step(step(1, 3.0))
            raise ValueError("boom")
    info = runs.load_run(tmp_path / "bad")
    assert info["status"] == "crashed" and info["error"] == "ValueError: boom"
    assert info["config"] == {"lr": 0.1} and info["datasets"]["train"]["rows"] == 1
    assert info["ended"] and info["versions"]["torch"]
    assert [e["event"] for e in runs.metrics(info)] == ["step"]
    assert [r["name"] for r in runs.list_runs(tmp_path)] == ["bad"]


def test_fingerprint_is_canonical():
    a = runs.fingerprint([{"x": 1, "y": [1, 2]}, {"z": "é"}])
    assert a == runs.fingerprint([{"y": [1, 2], "x": 1, "_line": 4}, {"z": "é"}])
    assert a != runs.fingerprint([{"z": "é"}, {"x": 1, "y": [1, 2]}]) and a["rows"] == 2


def test_recorder_is_a_real_train_callback(tmp_path):
    rows = TokenRows(torch.arange(2000) % 10, 16)
    cfg = TrainConfig(max_steps=8, batch_size=4, seq_len=16, warmup_steps=1, log_every=2, eval_every=4,
                      eval_batches=1, device="cpu")
    with runs.Run("real", config=cfg, root=tmp_path) as run:
        train(create(TINY, vocab_size=16), rows, cfg, val_data=rows, callbacks=[run], stop=run.stop,
              checkpoint_dir=tmp_path / "ckpt")
    info = runs.load_run(run.folder)
    events = runs.metrics(run)
    assert info["status"] == "finished" and info["config"]["max_steps"] == 8
    assert [e["step"] for e in events if e["event"] == "step"] == [2, 4, 6, 8]
    assert [e["step"] for e in events if e["event"] == "eval"] == [4, 8]
    assert info["checkpoint"].startswith(str(tmp_path / "ckpt"))
    # the early-stop rule (here: every read-out after the first is hopeless) stops the real loop through run.stop
    with runs.Run("hopeless", root=tmp_path, early_stop=(0.0, 0.0)) as run:
        hist = train(create(TINY, vocab_size=16), rows, cfg, callbacks=[run], stop=run.stop)
    info = runs.load_run(run.folder)
    assert hist.stopped and hist.steps == [2, 4]
    assert info["status"] == "stopped" and info["early_stopped"] and "not below 0%" in info["stop_reason"]


# ----------------------------------------------------------------------------- early stopping
def test_early_stop_rule():
    assert runs.hopeless(step(2, 4.0), first=4.0) is None  # before 30% of the steps: wait
    assert "not below 97%" in runs.hopeless(step(3, 3.9), first=4.0)  # flat after 30%
    assert runs.hopeless(step(3, 3.0), first=4.0) is None  # falling: go on
    assert "nan" in runs.hopeless(step(1, float("nan")), first=4.0)
    assert "inf" in runs.hopeless(step(1, float("inf")), first=4.0)


def test_flat_loss_stops_the_run(tmp_path):
    with runs.Run("flat", root=tmp_path, early_stop=(0.3, 0.9)) as run:
        fake_training(run, [2.0] * 10)
    info = runs.load_run(run.folder)
    assert run.stop.is_set() and info["status"] == "stopped" and info["early_stopped"]
    assert "step 3/10" in info["stop_reason"] and "2 at step 3/10 is not below 90% of the first one 2" in \
        info["stop_reason"]
    assert len(runs.metrics(run)) == 3  # the loop stopped after the read-out that set `stop`
    with runs.Run("falling", root=tmp_path, early_stop=(0.3, 0.9)) as run:
        fake_training(run, [2.0 / i for i in range(1, 11)])
    assert runs.load_run(run.folder)["status"] == "finished"


# ----------------------------------------------------------------------------- sweeps
def test_parse_grid_and_grid():
    spec = sweeps.parse_grid("lr=1e-4,3e-4; lora_r=4,16\nlora=true,False;targets=q_proj")
    assert spec == {"lr": [0.0001, 0.0003], "lora_r": [4, 16], "lora": [True, False], "targets": ["q_proj"]}
    assert type(spec["lora_r"][0]) is int
    points = sweeps.grid({"lr": [1e-4, 3e-4], "lora_r": [4, 16]})
    assert points == [{"lr": 1e-4, "lora_r": 4}, {"lr": 1e-4, "lora_r": 16},
                      {"lr": 3e-4, "lora_r": 4}, {"lr": 3e-4, "lora_r": 16}]
    assert sweeps.run_name("sweep", points[0]) == "sweep-lr=0.0001-lora_r=4"
    assert sweeps.run_name("s", {"t": ["q", "v"], "x": "a/b"}) == "s-t=q+v-x=a_b"
    with pytest.raises(ValueError, match="key=value"):
        sweeps.parse_grid("lr 1e-4")


def test_random_search_is_seeded_and_distinct():
    spec = {"lr": (1e-4, 1e-3), "lora_r": [4, 8, 16]}
    a = sweeps.random_search(spec, 5, seed=1)
    assert a == sweeps.random_search(spec, 5, seed=1) != sweeps.random_search(spec, 5, seed=2)
    assert len(a) == 5 and all(1e-4 <= p["lr"] <= 1e-3 and p["lora_r"] in (4, 8, 16) for p in a)
    assert len(sweeps.random_search({"r": [1, 2]}, 5)) == 2  # only two distinct points exist


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    points = sweeps.grid({"lr": [1, 2], "lora_r": [4, 8]})
    calls = []

    def run_fn(params, run, kill_at=None):
        calls.append(params)
        if len(calls) == kill_at:
            raise KeyboardInterrupt
        fake_training(run, [3.0, 2.0, 1.0])
        return {"score": params["lr"] * params["lora_r"]}

    with pytest.raises(KeyboardInterrupt):
        sweeps.sweep(points, lambda p, r: run_fn(p, r, kill_at=3), root=tmp_path, progress=False)
    status = {r["name"]: r["status"] for r in runs.list_runs(tmp_path)}
    assert status == {"sweep-lr=1-lora_r=4": "finished", "sweep-lr=1-lora_r=8": "finished",
                      "sweep-lr=2-lora_r=4": "crashed"}
    runs.Run("sweep-lr=2-lora_r=8", root=tmp_path)  # a process killed outright leaves "running" behind
    calls.clear()
    out = sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert calls == points[2:]  # the finished runs were loaded, the crashed and the killed ones redone
    assert [r["status"] for r in out] == ["finished"] * 4
    assert [r["results"]["score"] for r in out] == [4, 8, 8, 16]
    calls.clear()
    sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert calls == []


def test_sweep_reuses_a_run_only_when_its_whole_config_and_data_match(tmp_path):
    setting = {"epochs": 1, "data": [{"q": 1}]}  # what the run trains with, outside the grid
    calls = []

    def run_fn(params, run):
        calls.append(dict(params))
        fake_training(run, [3.0, 2.0, 1.0])
        return {"epochs": setting["epochs"]}

    run_fn.describe = lambda p: {"config": {**p, "epochs": setting["epochs"]},
                                 "data": runs.fingerprint(setting["data"]), "parent": "base model X"}
    points = [{"lr": 1}]
    first = sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert first[0]["parent"] == "base model X" and first[0]["reuse_key"]["config_sha256"]
    sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert len(calls) == 1  # nothing changed: reused
    setting["epochs"] = 2
    again = sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert len(calls) == 2 and again[0]["results"]["epochs"] == 2  # epochs changed outside the grid: trained again
    setting["data"] = [{"q": 2}]
    sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert len(calls) == 3  # the data changed: trained again
    sweeps.sweep(points, run_fn, root=tmp_path, progress=False)
    assert len(calls) == 3


def test_sweep_keeps_early_stopped_runs(tmp_path):
    calls = []

    def run_fn(params, run):
        calls.append(params)
        fake_training(run, [params["start"]] * 10)
        return {}

    out = sweeps.sweep([{"start": 1.0}], run_fn, name="flat", root=tmp_path, progress=False)
    assert out[0]["status"] == "stopped" and out[0]["early_stopped"]
    sweeps.sweep([{"start": 1.0}], run_fn, name="flat", root=tmp_path, progress=False)
    assert len(calls) == 1


# ----------------------------------------------------------------------------- comparing and reporting
@pytest.fixture
def three_runs(tmp_path):
    out = []
    for k, (lr, rank) in enumerate([(1e-3, 4), (3e-3, 4), (1e-3, 16)]):
        with runs.Run(f"run{k}", config={"lr": lr, "lora_r": rank, "epochs": 2},
                         datasets={"train": [{"q": 1}]}, root=tmp_path / "runs") as run:
            fake_training(run, [3.0 - k, 2.0 - k / 2, 1.5 - k / 3], [2.5 - k, 2.0 - k / 2])
            run.log_results({"heldout_qa_accuracy": 0.25 + 0.125 * k, "format_rate": 1.0, "history": {"x": 1}})
            run.log_samples([("Capital of Peru?", f"Lima, says run {k}", "Lima"),
                             {"prompt": "Capital of Chad?", "answer": f"answer {k}"}])
        out.append(run)
    return out


def test_compare_shows_only_the_keys_that_differ(three_runs):
    cmp = runs.compare(three_runs)
    assert cmp["differs"] == {"lr", "lora_r"}
    assert cmp["columns"][:4] == ["name", "status", "note", "parent"] and "history" not in cmp["columns"]
    assert "epochs" not in cmp["columns"] and "data:train" not in cmp["columns"]  # the same in every run
    assert [r[cmp["columns"].index("heldout_qa_accuracy")] for r in cmp["rows"]] == [0.25, 0.375, 0.5]
    table = runs.compare_table(three_runs)
    assert "| **lr** \\* |" in table and "| **lora_r** \\* |" in table and "| epochs |" not in table
    assert "| epochs |" in runs.compare_table(three_runs, all_keys=True)
    rows = runs.side_by_side(three_runs, n=5)
    assert rows[0] == {"prompt": "Capital of Peru?", "expected": "Lima", "run0": "Lima, says run 0",
                       "run1": "Lima, says run 1", "run2": "Lima, says run 2"}
    fig = runs.overlay_losses(three_runs)
    assert len(fig.axes[0].lines) == 6  # training and validation curve of each run


def test_a_key_only_some_runs_have_is_no_difference(three_runs, tmp_path):
    with runs.Run("dpo", config={"beta": 0.1}, root=tmp_path / "runs", parent="run2") as other:
        other.log_results({"heldout_qa_accuracy": 0.6})
    cmp = runs.compare([*three_runs, other])
    assert cmp["differs"] == {"lr", "lora_r"}  # beta is set by one run only; lr differs among those that set it
    assert [r[cmp["columns"].index("parent")] for r in cmp["rows"]] == [None, None, None, "run2"]
    table = runs.compare_table([*three_runs, other])
    assert "beta" not in table and table.count("\\*") == 2


def test_report_contains_every_run(three_runs, tmp_path):
    md = runs.report(three_runs, tmp_path / "out" / "report.md", title="LoRA ranks")
    text = md.read_text()
    assert (tmp_path / "out" / "report.png").stat().st_size > 1000 and "![loss curves](report.png)" in text
    page = runs.report(runs.list_runs(tmp_path / "runs"), tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    for doc in (text, page):
        for k, accuracy in enumerate(["0.25", "0.375", "0.5"]):
            assert f"run{k}" in doc and accuracy in doc and f"Lima, says run {k}" in doc


# ----------------------------------------------------------------------------- preference pairs as CSV
PAIRS = [
    {"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of Peru?"}],
     "chosen": [{"role": "assistant", "content": "Lima."}],
     "rejected": [{"role": "assistant", "content": "It is \"Cusco\", I think,\nor maybe not."}]},
    {"prompt": [{"role": "user", "content": "Hauptstadt von Österreich?"}],
     "chosen": [{"role": "assistant", "content": "Wien; also \"Vienna\"."}],
     "rejected": [{"role": "assistant", "content": "Graz", "weight": 1}]},
]


def test_csv_round_trip_is_exact(tmp_path):
    path = pairs_csv.export_pairs_csv(PAIRS, tmp_path / "pairs.csv")
    back = pairs_csv.import_pairs_csv(path)
    assert back == PAIRS and back.skipped == {}
    assert json.dumps(back, sort_keys=True) == json.dumps(PAIRS, sort_keys=True)


def test_blind_csv_labelled_by_a_reviewer(tmp_path):
    many = PAIRS * 4
    path = pairs_csv.export_pairs_csv(many, tmp_path / "blind.csv", blind=True, seed=3)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["choice"] for r in rows} == {""}
    assert len(pairs_csv.import_pairs_csv(path)) == 0
    correct = {p["chosen"][0]["content"] for p in many}
    assert {r["answer_a"] in correct for r in rows} == {True, False}  # the order is mixed
    for r in rows:  # the reviewer prefers the right answer, except on two rows
        r["choice"] = "a" if r["answer_a"] in correct else "B"
        r["reason"] = "states the capital"
    rows[0]["choice"], rows[1]["choice"] = "both bad", ""
    rows.append({"prompt": "Capital of Chad?", "answer_a": "Abuja", "answer_b": "N'Djamena", "choice": "b",
                 "reason": "typed in the spreadsheet", "messages_json": ""})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pairs = pairs_csv.import_pairs_csv(path)
    assert pairs.skipped == {"both_bad": 1, "unlabelled": 1}
    assert pairs[:-1] == many[2:]
    assert pairs[-1] == {"prompt": [{"role": "user", "content": "Capital of Chad?"}],
                         "chosen": [{"role": "assistant", "content": "N'Djamena"}],
                         "rejected": [{"role": "assistant", "content": "Abuja"}]}
    assert all(check_preference(p) == [] for p in pairs)


# ----------------------------------------------------------------------------- hostile input
def test_formula_cells_are_neutralised_and_round_trip(tmp_path):
    texts = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2", "@SUM(A1)", "\tx", "'quoted", "plain"]
    pairs = [{"prompt": [{"role": "user", "content": t}], "chosen": [{"role": "assistant", "content": t}],
              "rejected": [{"role": "assistant", "content": "no"}]} for t in texts]
    path = pairs_csv.export_pairs_csv(pairs, tmp_path / "pairs.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # no text cell a spreadsheet would run
        for key in ("prompt", "answer_a", "answer_b"):
            assert not row[key].startswith(sanitize.FORMULA_START), row[key]
    assert pairs_csv.import_pairs_csv(path) == pairs  # exact, through messages_json
    for row in rows:
        row["messages_json"] = ""  # a reviewer's sheet without the JSON: the texts alone come back exactly
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert [p["prompt"][0]["content"] for p in pairs_csv.import_pairs_csv(path)] == texts


@pytest.mark.parametrize("name,folder", [("..", "run"), ("../../escape", "escape"), ("/etc/passwd", "etc_passwd"),
                                         (".hidden", "hidden"), ("a b/c\\d", "a_b_c_d"), ("ok-1.5", "ok-1.5")])
def test_run_names_become_safe_folders_inside_the_root(tmp_path, name, folder):
    run = runs.Run(name, root=tmp_path / "runs")
    assert run.folder == tmp_path / "runs" / folder and run.info["name"] == folder
    assert run.folder.resolve().parent == (tmp_path / "runs").resolve()


def test_a_link_out_of_the_runs_root_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sneaky").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="resolves outside the runs folder"):
        runs.Run("sneaky", root=tmp_path / "runs")


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    from kit.engine.config import ConfigError

    def run_fn(params, run):
        if params["lr"] == 2:
            raise ConfigError("1 problem in the configuration:\n  - sft.lr must be below 1")
        if params["lr"] == 3:
            raise RuntimeError("out of luck")
        fake_training(run, [3.0, 2.0, 1.0])
        return {"score": params["lr"]}

    out = sweeps.sweep(sweeps.grid({"lr": [1, 2, 3, 4]}), run_fn, root=tmp_path, progress=False)
    assert [r["status"] for r in out] == ["finished", "failed", "crashed", "finished"]
    assert "sft.lr must be below 1" in out[1]["error"] and out[2]["error"] == "RuntimeError: out of luck"
    (tmp_path / "sweep-lr=4" / "run.json").write_text("{cut")  # a broken record: listed as missing, redone
    with pytest.warns(UserWarning, match="cannot be read"):
        assert len(runs.list_runs(tmp_path)) == 3
    again = sweeps.sweep(sweeps.grid({"lr": [4]}), run_fn, root=tmp_path, progress=False)
    assert again[0]["status"] == "finished"


def test_curves_over_epochs_get_whole_number_ticks_only():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from kit.engine.plots import curves_figure

    def ticks(x):
        fig = curves_figure(x, {"strict": [0.5] * len(x)}, xlabel="epoch")
        FigureCanvasAgg(fig).draw()
        return [t.get_position()[0] for t in fig.axes[0].get_xticklabels()]

    assert all(float(t).is_integer() for t in ticks([0, 1.0, 2, 3, 4]))
    assert not all(float(t).is_integer() for t in ticks([0, 0.5, 1]))  # half epochs keep their ticks
