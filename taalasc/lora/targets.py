"""Which Linear layers a LoRA adapter touches: PEFT's matching rules on our tensor names.

PEFT matches ``target_modules`` against module keys of the model it wrapped: a regex string must
fullmatch the key, a list entry must equal the key or be a dotted suffix of it
(``check_target_module_exists``); ``rank_pattern``/``alpha_pattern`` keys match as
``(.*\\.)?(key)$`` (``get_pattern_key``). A checkpoint saved as LlamaModel has "layers.0..."
where the adapter (trained on LlamaForCausalLM) has "model.layers.0...", so every comparison
tries the name with and without a task wrapper prefix.
"""

from __future__ import annotations

import re
from re import _constants, _parser  # the parser behind re.compile (Python >= 3.11)
from typing import Any

from taalasc.errors import ModelError
from taalasc.model.checkpoint import Checkpoint

_WRAPPERS = ("model", "bert", "roberta", "transformer")  # task-head wrappers around the body
_EMBEDDINGS = ("embed_tokens", "word_embeddings", "position_embeddings", "token_type_embeddings",
               "wte", "wpe")


def canonical(module: str) -> str:
    """Module name without a task wrapper ("model.layers.0..." and "layers.0..." agree)."""
    head, _, rest = module.partition(".")
    return rest if rest and head in _WRAPPERS else module


def spellings(module: str) -> list[str]:
    core = canonical(module)
    return [module, core] + [f"{w}.{core}" for w in _WRAPPERS]


# --- regexes from adapter_config.json -------------------------------------------------------
#
# PEFT matches a string target_modules (and exclude_modules, and the rank_pattern /
# alpha_pattern keys) with Python's backtracking ``re``, which has no time limit: a pattern
# such as (a+)+$ takes exponential time on a name it almost matches, and the adapter file is
# untrusted. Without a linear-time engine among our dependencies, ``regex_problem`` refuses
# every construct that lets the engine backtrack exponentially, and bounds the polynomial:
#   * no quantifier inside a repeated group ((a+)+, (a*)*, (.*a){20}, (ab?)+), and inside a
#     repeated group no alternation whose alternatives can start with the same character or
#     match nothing ((a|a)*, (a|ab)+): each pass through the group then has one way to go;
#   * no backreferences ((a)\1 makes matching NP-hard) and no conditional groups;
#   * what is left backtracks polynomially: each repeat of variable length multiplies the
#     work per name by its number of choices, up to the name's length (taken as NAME_CHARS)
#     for .* or \d+, 2 for x?; each ambiguous alternation outside repeats by its number of
#     alternatives; the product must stay within MAX_STEPS, three free repeats (.*.*.*X);
#   * at most MAX_PATTERN_CHARS characters.
# This is sound enough for what matching here is: a few hundred module names of the model,
# each under ~100 characters (NAME_CHARS is twice that), each tried in a few spellings.
# Measured on a 180-character name: .*.*.*X takes 9 ms, .*.*.*.*X 0.2 s, five repeats 7 s.
# PEFT's own patterns (.*\.(q_proj|v_proj), model.layers.\d+.self_attn.(q|k|v)_proj, the
# (.*\.)?(key)$ wrapper of rank_pattern keys) pass.
MAX_PATTERN_CHARS = 1000
NAME_CHARS = 200
MAX_STEPS = NAME_CHARS ** 3
_ANY = None  # a first-character set that may be any character


class _Unsafe(Exception):
    pass


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is refused as a module regex (see above), or None when it is safe."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"is {len(pattern):,} characters long; at most {MAX_PATTERN_CHARS:,}"
    scan = _Scan()
    try:
        scan.sequence(_parser.parse(pattern).data, False)
    except re.error as exc:
        return f"is not a valid regex ({exc})"
    except RecursionError:
        return "nests groups too deeply"
    except _Unsafe as exc:
        return f"could take too long in Python's backtracking regex engine: {exc}"
    return None


class _Scan:
    """One walk over the parsed pattern: first characters, empty matches, steps per name."""

    _REPEATS = {_constants.MAX_REPEAT, _constants.MIN_REPEAT,
                getattr(_constants, "POSSESSIVE_REPEAT", _constants.MAX_REPEAT)}

    def __init__(self) -> None:
        self.steps = 1

    def charge(self, factor: int) -> None:
        self.steps *= factor
        if self.steps > MAX_STEPS:
            raise _Unsafe(f"its repeats (*, +, {{m,n}}) and ambiguous alternations multiply "
                          f"the work per module name past {MAX_STEPS:,} steps (three .* "
                          "repeats reach it)")

    def sequence(self, items, in_repeat: bool) -> tuple[frozenset | None, bool]:
        """(characters the sequence may start with, or _ANY; whether it can match empty)."""
        first: frozenset | None = frozenset()
        nullable = True
        for op, av in items:
            head, empty = self.item(op, av, in_repeat)
            if nullable:
                first = _ANY if first is _ANY or head is _ANY else first | head
            nullable = nullable and empty
        return first, nullable

    def item(self, op, av, in_repeat: bool) -> tuple[frozenset | None, bool]:
        c = _constants
        if op is c.LITERAL:
            return frozenset((av,)), False
        if op in (c.NOT_LITERAL, c.ANY):
            return _ANY, False
        if op is c.IN:
            return _class_chars(av), False
        if op is c.AT:
            return frozenset(), True
        if op is c.SUBPATTERN:
            return self.sequence(av[-1], in_repeat)
        if op is getattr(c, "ATOMIC_GROUP", None):
            return self.sequence(av, in_repeat)
        if op in (c.ASSERT, c.ASSERT_NOT):  # zero-width: its body is scanned, it starts nothing
            self.sequence(av[1], in_repeat)
            return frozenset(), True
        if op is c.BRANCH:
            return self.branch(av[1], in_repeat)
        if op in self._REPEATS:
            low, high, body = av
            if in_repeat:
                raise _Unsafe("a quantifier inside a repeated group")
            head, empty = self.sequence(body, high > 1)
            if high > 1 and empty:
                raise _Unsafe("a repeated group that can match the empty string")
            if low != high:  # x? doubles the ways to match (a?a?a?aaa is exponential)
                self.charge(min(high - low + 1, NAME_CHARS))
            return head, empty or low == 0
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise _Unsafe("a backreference or conditional group")
        raise _Unsafe(f"the construct {op} is not supported in module patterns")

    def branch(self, alternatives, in_repeat: bool) -> tuple[frozenset | None, bool]:
        heads, ambiguous, nullable = [], False, False
        for alternative in alternatives:
            head, empty = self.sequence(alternative, in_repeat)
            overlap = any(head is _ANY or other is _ANY or head & other for other in heads)
            ambiguous = ambiguous or empty or overlap
            nullable = nullable or empty
            heads.append(head)
        if ambiguous and in_repeat:
            raise _Unsafe("an alternation inside a repeated group whose alternatives can "
                          "start with the same character or match nothing")
        if ambiguous:
            self.charge(len(alternatives))
        union: frozenset | None = frozenset()
        for head in heads:
            union = _ANY if union is _ANY or head is _ANY else union | head
        return union, nullable


def _class_chars(items) -> frozenset | None:
    """The characters of a [...] class, or _ANY for negated, category or wide classes."""
    chars: set[int] = set()
    for op, av in items:
        if op is _constants.LITERAL:
            chars.add(av)
        elif op is _constants.RANGE and av[1] - av[0] < 256:
            chars.update(range(av[0], av[1] + 1))
        else:  # NEGATE, CATEGORY (\d, \w, ...), a wide RANGE
            return _ANY
    return frozenset(chars)


def matches(targets: str | list[str], module: str) -> bool:
    """PEFT's check_target_module_exists: regex fullmatch, or name / dotted-suffix match."""
    if isinstance(targets, str):
        return any(re.fullmatch(targets, s) for s in spellings(module))
    return any(module == t or module.endswith("." + t) for t in targets) or \
        any(canonical(module) == t for t in targets)


PATTERN_KEY = r"(.*\.)?({})$"  # how PEFT's get_pattern_key wraps a rank/alpha_pattern key


def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's get_pattern_key: the first pattern p with (.*\\.)?(p)$ matching the module."""
    for key, value in patterns.items():
        if any(re.match(PATTERN_KEY.format(key), s) for s in spellings(module)):
            return value
    return default


def linear_modules(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Module name -> weight name of every Linear a LoRA may adapt, from tensor shapes.

    A Linear is a 2-D ``.weight``; embeddings and lm_head (the output layer) are excluded,
    as PEFT's "all-linear" excludes the output layer.
    """
    out = {}
    for name, shape in shapes.items():
        module = name[: -len(".weight")]
        if (len(shape) == 2 and name.endswith(".weight") and canonical(module) != "lm_head"
                and module.rsplit(".", 1)[-1] not in _EMBEDDINGS):
            out[module] = name
    return out


Targets = str | list[str] | tuple[str, ...]  # "all-linear", a regex, or module names


def select_targets(linears: dict[str, str], targets: Targets) -> set[str]:
    """Weight names of the Linears that ``targets`` selects ("all-linear", regex or names)."""
    if targets == "all-linear":
        return set(linears.values())
    sel = targets if isinstance(targets, str) else list(targets)
    return {w for m, w in linears.items() if matches(sel, m)}


def target_shapes(ckpt: Checkpoint, targets: Targets = ("q_proj", "v_proj")
                  ) -> dict[str, tuple[int, int]]:
    """Weight name -> (out, in) of the Linears that ``targets`` selects (PEFT matching rules).

    The default is PEFT's default for Llama; with a rank this sizes an adapter (``lora_fits``)
    from the checkpoint's headers alone.
    """
    shapes = {n: t.shape for n, t in ckpt.tensors.items()}
    names = select_targets(linear_modules(shapes), targets)
    out = {n: tuple(t.shape) for n, t in ckpt.tensors.items() if n in names}
    if not out:
        raise ModelError(f"{ckpt.path}: LoRA targets {targets!r} match no Linear layer")
    return out  # type: ignore[return-value]
