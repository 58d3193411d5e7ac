"""docs/huggingface.md: every ```python block runs, top to bottom in one namespace, as a reader would run them."""
import pathlib
import re
import warnings

import pytest

pytest.importorskip("transformers")

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "huggingface.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_snippets():
    assert len(blocks()) >= 4


def test_snippets_run(capsys):
    import transformers
    transformers.utils.logging.set_verbosity_error()
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny configs' token-id notes and the fallback's rule notes
        for i, code in enumerate(blocks()):
            exec(compile(code, f"{DOC.name} block {i}", "exec"), namespace)
    assert namespace["F"].num_samples == 4
