"""TRL's dataset types and the common community shapes: each read into the kit's form, problems named as
the row writes them, one shape per file, and a Hugging Face dataset with other column names."""

import json
from pathlib import Path

import pytest

from kit.engine import data
from kit.engine.chat import render
from kit.engine.shapes import convert, detect

SHAPES = Path(__file__).resolve().parent.parent / "datasets" / "shapes"
KIT_FORM = {"messages.jsonl": "messages", "prompt_completion.jsonl": "prompt-completion",
            "preference.jsonl": "preference", "implicit_preference.jsonl": "implicit preference",
            "text.jsonl": "text", "sharegpt.jsonl": "ShareGPT", "alpaca.jsonl": "Alpaca", "tools.jsonl": "messages"}


def write(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", sorted(KIT_FORM))
def test_each_example_file_loads_in_its_shape_and_validates_with_loss(name, tok):
    examples, report = data.load_file(SHAPES / name)
    assert report.ok and report.shape == KIT_FORM[name] and len(examples) >= 3
    deep = data.validate(examples, tok, max_length=256)
    assert deep.errors == [] and deep.summary["loss_tokens"] > 0
    kinds = {"messages" if "messages" in e else "prompt" if "prompt" in e else "text" for e in examples}
    assert len(kinds) == 1  # one kit form per file


def test_conversions_give_the_kit_form():
    u, a = {"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima."}
    assert convert({"prompt": [u], "completion": [a]})[0] == {"messages": [u, a]}
    assert convert({"prompt": "Capital of Peru?", "completion": "Lima."})[0] == {"messages": [u, a]}
    assert convert({"conversations": [{"from": "human", "value": "Capital of Peru?"},
                                      {"from": "gpt", "value": "Lima."}]})[0] == {"messages": [u, a]}
    assert convert({"instruction": "Capital of", "input": "Peru?", "output": "Lima."})[0] == {
        "messages": [{"role": "user", "content": "Capital of\n\nPeru?"}, a]}
    assert convert({"instruction": "Capital of Peru?", "input": "", "output": "Lima."})[0] == {"messages": [u, a]}
    sys = {"role": "system", "content": "Be brief."}
    b = {"role": "assistant", "content": "Quito."}
    two = [sys, u, a, {"role": "user", "content": "Sure?"}]
    pair, problems, shape = convert({"chosen": [*two, a], "rejected": [*two, b]})
    assert shape == "implicit preference" and problems == []
    assert pair == {"prompt": two, "chosen": [a], "rejected": [b]}
    assert convert({"text": "Lima is the capital of Peru."})[0] == {"text": "Lima is the capital of Peru."}


def test_problems_are_named_as_the_row_writes_them():
    _, p, _ = convert({"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Yes"}]}, 4)
    assert [(x.line, x.field) for x in p if x.severity == "error"] == [(4, "conversations[1].from")]
    _, p, _ = convert({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]})
    assert [x.field for x in p] == ["conversations[1].value"]
    _, p, _ = convert({"instruction": "Capital of Peru?"})
    assert [x.field for x in p] == ["output"] and "missing 'output'" in p[0].message
    _, p, _ = convert({"instruction": "Capital of Peru?", "output": ""})
    assert [x.field for x in p] == ["output"]
    _, p, _ = convert({"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant"}]})
    assert [x.field for x in p] == ["completion[0].content"]
    _, p, _ = convert({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}],
                       "rejected": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "B"}]})
    assert [x.field for x in p][0] == "rejected[1].role"
    _, p, _ = convert({"chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant",
                                                                                        "content": "B"}]})
    assert "share no user message" in p[0].message
    assert detect({"question": "Hi"}) is None


def test_a_file_that_mixes_shapes_is_an_error_naming_both(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
            {"instruction": "Say hi.", "output": "Hi."}, {"text": "Hello there."}]
    examples, report = data.load_jsonl(write(tmp_path, rows))
    assert len(examples) == 1 and [p.line for p in report.errors] == [2, 3]
    assert "an Alpaca row in a file of messages rows (line 1" in report.errors[0].message
    assert "a text row in a file of messages rows" in report.errors[1].message
    _, report = data.load_jsonl(write(tmp_path, [{"question": "Hi", "answer": "Hello"}]))
    assert "no other shape the kit reads (keys: answer, question)" in report.errors[0].message


def test_a_text_row_learns_every_token_and_its_end(tok):
    r = render({"text": "Lima is the capital of Peru."}, tok)
    assert r.input_ids[-1] == tok.eos_token_id and r.loss_mask[-1] == 1
    assert sum(r.loss_mask) == len(r.input_ids) - r.loss_mask.index(1) and r.loss_mask.index(1) <= 1
    rows, dropped = data.sft_rows([{"text": "Lima is the capital of Peru."}], tok, 8)
    assert len(rows[0].input_ids) == 8 and rows[0].truncated > 0 and not dropped


def test_from_hf_dataset_maps_other_column_names():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"question": ["Capital of Peru?"], "answer": ["Lima."]})
    got = data.from_hf_dataset(ds, columns={"question": "prompt", "answer": "completion"})
    assert got == [{"messages": [{"role": "user", "content": "Capital of Peru?"},
                                 {"role": "assistant", "content": "Lima."}]}]
    with pytest.raises(ValueError, match="map yours") as e:
        data.from_hf_dataset(ds)
    assert "row 1" in str(e.value) and "question" in str(e.value)
    with pytest.raises(ValueError, match="'dialog'"):
        data.from_hf_dataset(ds, columns={"dialog": "messages"})
    sharegpt = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "Hi"},
                                                              {"from": "gpt", "value": "Hello."}]}])
    assert data.from_hf_dataset(sharegpt)[0]["messages"][1] == {"role": "assistant", "content": "Hello."}


def test_tool_calls_and_the_tool_role_pass_through():
    row = json.loads((SHAPES / "tools.jsonl").read_text().splitlines()[0])
    assert convert(row)[1] == []
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": "lookup"}]}
    assert [p.field for p in convert(bad)[1] if p.severity == "error"] == ["messages[1].tool_calls"]


def test_python_lists_of_any_shape_are_converted_with_row_numbers():
    from kit.engine.shapes import to_kit_form

    rows = [{"instruction": "Capital of Peru?", "output": "Lima."},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]
    assert to_kit_form(rows)[0]["messages"][1] == {"role": "assistant", "content": "Lima."}
    assert to_kit_form(rows)[1] is rows[1]  # the kit's form is kept as it is
    with pytest.raises(ValueError, match=r"row 2: output: missing 'output'"):
        to_kit_form([rows[0], {"instruction": "Capital of Chile?"}])
