from kit.engine.tokenizer import BOS, END, EOS, PAD, ROLE_TOKENS, encode_documents, stop_token_ids


def test_round_trip_any_text(tok):
    for text in ["The capital of France is Paris.", "  two  spaces\nand a line", "Ünïcode 漢字 ✓", ""]:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_special_tokens_are_single_ids(tok):
    for t in (BOS, EOS, PAD, END, *ROLE_TOKENS):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, t
        assert tok.convert_ids_to_tokens(ids) == [t]
    assert tok.pad_token == PAD and tok.bos_token == BOS and tok.eos_token == EOS
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    assert set(stop_token_ids(tok)) == {tok.eos_token_id, tok.convert_tokens_to_ids(END)}


def test_vocab_size_as_asked(tok):
    assert len(tok) == 512


def test_frequent_words_become_single_tokens(tok):
    # the BPE learned on the corpus: "capital" appears thousands of times
    assert len(tok(" capital", add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_marks_exactly_the_assistant_span(tok):
    conv = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "Thanks."},
            {"role": "assistant", "content": "You are welcome."}]
    out = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    marked = [i for i, m in zip(ids, mask) if m]
    # exactly the two replies, each followed by its end-of-turn token, nothing else
    expected = []
    for reply in ("The capital of France is Paris.", "You are welcome."):
        expected += tok(reply, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(END)]
    assert marked == expected
    # and the marked tokens are contiguous per reply: two runs of ones
    runs = sum(1 for a, b in zip([0] + mask, mask) if b and not a)
    assert runs == 2


def test_generation_prompt_ends_with_assistant_header(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
    assert text.startswith(BOS)


def test_encode_documents_wraps_each_doc(tok):
    ids = encode_documents(tok, ["one doc", "two"])
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids.count(tok.bos_token_id) == 2 and ids.count(tok.eos_token_id) == 2
