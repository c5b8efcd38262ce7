import os

# Nothing in the test suite may reach for a hub: the toy tier builds what it needs locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_base():
    from handbook.toy import toy_base_path

    return toy_base_path()


@pytest.fixture(scope="session")
def toy_tokenizer(toy_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(toy_base)
