import pytest

from gptclassify import UserError, get_tokenizer
from gptclassify.data.tokenizer import GPT2_BPE_ENV


def test_book_example(tokenizer):
    assert tokenizer.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert tokenizer.pad_id == 50256 and tokenizer.encode("<|endoftext|>") == [50256]


def test_all_sms_round_trip(tokenizer, sms):
    assert len(sms) == 5574
    for text in sms:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bpe_dir_is_checked(tmp_path, monkeypatch):
    (tmp_path / "encoder.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(UserError, match="sha256"):
        get_tokenizer("gpt2", bpe_dir=tmp_path)
    monkeypatch.setenv(GPT2_BPE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="not found"):
        get_tokenizer("gpt2")
