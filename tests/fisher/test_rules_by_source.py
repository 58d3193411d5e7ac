"""code_of: the normalised code of a ``forward`` that recognises transformers' copied classes."""
import pytest

from ftdfast.fisher.rules._by_source import code_of

BODY = '''
def forward(self, x):
    if self.flag:
        x = x * 2
    return x + self.s
'''

SAME = [  # (id, source): the same code as BODY
    ("comments-and-blank-lines", '''
def forward(self, x):  # doubled
    # only when flagged

    if self.flag:
        x = x * 2
    return x + self.s  # shifted
'''),
    ("method-indented-8-spaces-tabs-apart", '''
        def forward(self,x):
                if self.flag:
                        x = x*2
                return x+self.s
'''),
    ("backslash-continuation", '''
def forward(self, x):
    if self.flag:
        x = x \\
            * 2
    return x + self.s
'''),
]

DIFFERENT = [  # (id, source, other): sources whose code differs
    ("hash-inside-a-string", 'def f(self):\n    return "#a"\n', 'def f(self):\n    return "#b"\n'),
    ("block-structure", BODY, BODY.replace("\n    return", "\n        return")),
    ("string-contents-spacing", 'def f(self):\n    return "a b"\n', 'def f(self):\n    return "ab"\n'),
]


@pytest.mark.parametrize("src", [s for _, s in SAME], ids=[i for i, _ in SAME])
def test_layout_and_comments_do_not_change_the_code(src):
    assert code_of(src) == code_of(BODY) is not None


@pytest.mark.parametrize("a,b", [(a, b) for _, a, b in DIFFERENT], ids=[i for i, _, _ in DIFFERENT])
def test_different_code_stays_different(a, b):
    assert code_of(a) != code_of(b)


def test_source_that_does_not_tokenize_has_no_code():
    assert code_of('def f(self):\n    return "unclosed\n') is None
