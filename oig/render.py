"""Render source records into OIG conversations from a declarative template (one YAML file per constituent).

The patterns OIG built with f-strings, as data:

- ``instructions``: a paraphrase pool; ``placement`` puts the chosen instruction
  before or after the shared ``context`` in the first human turn;
- ``group_by`` + ``max_turns``: consecutive records sharing a context are packed
  into one multi-turn conversation, at most ``max_turns`` human turns each (a
  single record with more turns is cut at the cap; no ``max_turns``, no cap);
- ``turns``: each record yields one or more turns; later entries are follow-ups
  that chain further tasks on the same source (skipped when their ``when`` is false);
- ``unanswerable``: when its ``when`` holds, the bot answers with a refusal from a pool;
- ``bot`` pools: answer augmentations (several phrasings of the same answer);
- ``dialogue``: a list field of alternating human/bot utterances becomes turns as is;
- ``messages``: a list field of ``{role, content}`` messages (the chat form of most
  Hub chat sets) becomes turns as is; roles are validated (``system`` content opens
  the next user turn, since OIG has no system tag).

A template value that renders a dict, a list or ``None`` is an error naming the
record (``file:line``), never a row holding ``"{'role': 'user', ...}"`` or ``"None"``.

Every choice comes from a ``random.Random`` seeded by the recipe seed, the
constituent and the record's own content, so the same inputs give the same
bytes, in any process and whatever came before in the stream.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from laion_hf.core.errors import UserError
from oig.schema import ASSISTANT_ROLE, USER_ROLE, format_text

TEMPLATES_DIR = Path(__file__).parent / "templates"
PLACEMENTS = ("before", "after")


class TemplateSpecError(UserError):
    """A template file that is malformed, or a record it cannot render."""


#: Chat roles as sources spell them -> ours (``system`` is folded into the next user turn).
ROLES = {"user": USER_ROLE, "human": USER_ROLE, "assistant": ASSISTANT_ROLE, "bot": ASSISTANT_ROLE, "gpt": ASSISTANT_ROLE,
         "model": ASSISTANT_ROLE, "system": "system"}


class UnrenderableValue(TemplateError):
    """A ``{{ expression }}`` whose value has no text form fit for a conversation."""


def _text_only(value: Any) -> Any:
    if value is None or isinstance(value, Mapping | list | tuple | set):
        kind = "None (a missing value; guard it with `when:`)" if value is None else f"a {type(value).__name__} ({value!r:.60})"
        raise UnrenderableValue(f"a template value rendered {kind}; index into it, join it, or use a `messages:` turn")
    return value


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=_text_only)


def template_path(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A shipped template by name (``squad_v2``) or a YAML path (relative to ``base_dir``)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return (base_dir / candidate) if base_dir is not None and not candidate.is_absolute() else candidate
    return TEMPLATES_DIR / f"{name_or_path}.yaml"


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateSpecError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TemplateSpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TemplateSpecError(f"{path}: expected a mapping at the top level")
    return data


class _Pool:
    """A list of compiled Jinja templates to choose from; remembers which one was chosen."""

    def __init__(self, sources: Any, where: str):
        if isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, list) or not sources:
            raise TemplateSpecError(f"{where}: expected a template string or a non-empty list of them")
        self.where = where
        try:
            self.templates = [_ENV.from_string(str(s)) for s in sources]
        except TemplateError as exc:
            raise TemplateSpecError(f"{where}: bad template: {exc}") from exc

    def render(self, rng: random.Random, variables: Mapping[str, Any]) -> tuple[int, str]:
        index = rng.randrange(len(self.templates))
        try:
            return index, self.templates[index].render(**variables).strip()
        except TemplateError as exc:
            raise TemplateSpecError(f"{self.where}[{index}]: {exc}") from exc


def _condition(expression: Any, where: str):
    if expression is None:
        return None
    try:
        return _ENV.compile_expression(str(expression))
    except TemplateError as exc:
        raise TemplateSpecError(f"{where}: bad condition {expression!r}: {exc}") from exc


def _test(condition, variables: Mapping[str, Any], where: str) -> bool:
    if condition is None:
        return True
    try:
        return bool(condition(**variables))
    except TemplateError as exc:
        raise TemplateSpecError(f"{where}: {exc}") from exc


@dataclass
class _TurnSpec:
    human: _Pool | None
    bot: _Pool | None
    when: Any
    unanswerable_when: Any
    refusals: _Pool | None
    dialogue_field: str | None = None
    messages_field: str | None = None


@dataclass
class Conversation:
    """One rendered conversation and how it was made."""

    messages: list[dict[str, str]]
    template_id: str

    @property
    def text(self) -> str:
        return format_text(self.messages)


class Template:
    """A constituent's template, compiled once; :meth:`render` turns a record stream into conversations."""

    def __init__(self, spec: Mapping[str, Any], path: Path):
        self.path = path
        where = str(path)
        self.name = str(spec.get("constituent") or path.stem)
        self.description = str(spec.get("description", ""))
        self.group_by = spec.get("group_by")
        self.max_turns = int(spec["max_turns"]) if spec.get("max_turns") is not None else None
        if self.max_turns is not None and self.max_turns < 1:
            raise TemplateSpecError(f"{where}: max_turns must be >= 1")
        self.context = _Pool(spec["context"], f"{where}: context") if "context" in spec else None
        self.instructions = _Pool(spec["instructions"], f"{where}: instructions") if "instructions" in spec else None
        self.placement = list(spec.get("placement", ["before"]))
        if not set(self.placement) <= set(PLACEMENTS):
            raise TemplateSpecError(f"{where}: placement must be a list of {PLACEMENTS}")
        turns = spec.get("turns")
        if not isinstance(turns, list) or not turns:
            raise TemplateSpecError(f"{where}: `turns` must be a non-empty list")
        self.turns = [self._turn(t, f"{where}: turns[{i}]") for i, t in enumerate(turns)]

    @classmethod
    def load(cls, name_or_path: str, base_dir: Path | None = None) -> Template:
        path = template_path(name_or_path, base_dir)
        return cls(load_yaml(path), path)

    @staticmethod
    def _turn(spec: Mapping[str, Any], where: str) -> _TurnSpec:
        if not isinstance(spec, Mapping):
            raise TemplateSpecError(f"{where}: expected a mapping")
        if "dialogue" in spec:
            return _TurnSpec(None, None, _condition(spec.get("when"), where), None, None, dialogue_field=str(spec["dialogue"]))
        if "messages" in spec:
            return _TurnSpec(None, None, _condition(spec.get("when"), where), None, None, messages_field=str(spec["messages"]))
        if "human" not in spec or "bot" not in spec:
            raise TemplateSpecError(f"{where}: a turn needs `human` and `bot` (or `dialogue: FIELD` / `messages: FIELD`)")
        unanswerable = spec.get("unanswerable") or {}
        return _TurnSpec(
            human=_Pool(spec["human"], f"{where}.human"),
            bot=_Pool(spec["bot"], f"{where}.bot"),
            when=_condition(spec.get("when"), f"{where}.when"),
            unanswerable_when=_condition(unanswerable.get("when"), f"{where}.unanswerable.when"),
            refusals=_Pool(unanswerable["refusals"], f"{where}.unanswerable.refusals") if unanswerable else None,
            dialogue_field=None,
        )

    def record_turns(self, record: Mapping[str, Any], rng: random.Random) -> tuple[list[tuple[str, str]], str]:
        """The (human, bot) turns one record yields, and a code of the choices made."""
        turns: list[tuple[str, str]] = []
        codes: list[str] = []
        for index, spec in enumerate(self.turns):
            if not _test(spec.when, record, f"{self.path}: turns[{index}].when"):
                continue
            if spec.dialogue_field is not None:
                utterances = _utterances(record, spec.dialogue_field)
                pairs = [(utterances[i], utterances[i + 1]) for i in range(0, len(utterances) - 1, 2)]
                turns.extend(pairs)
                codes.append(f"d{len(pairs)}")
                continue
            if spec.messages_field is not None:
                pairs = chat_turns(record.get(spec.messages_field), spec.messages_field)
                turns.extend(pairs)
                codes.append(f"m{len(pairs)}")
                continue
            h, human = spec.human.render(rng, record)
            if spec.refusals is not None and _test(spec.unanswerable_when, record, f"{self.path}: unanswerable"):
                b, bot = spec.refusals.render(rng, record)
                codes.append(f"h{h}r{b}")
            else:
                b, bot = spec.bot.render(rng, record)
                codes.append(f"h{h}b{b}")
            turns.append((human, bot))
        return turns, ".".join(codes)

    def render(self, records: Iterable[Mapping[str, Any]], seed: int) -> Iterator[Conversation]:
        """Conversations from a record stream; consecutive records with the same ``group_by`` value are packed."""
        if self.group_by:
            groups = groupby(records, key=lambda r: group_key(r, self.group_by, self.path))
        else:
            groups = ((None, [r]) for r in records)
        for _, group in groups:
            yield from self._pack(list(group), seed)

    def _pack(self, records: list[Mapping[str, Any]], seed: int) -> Iterator[Conversation]:
        pending: list[tuple[Mapping[str, Any], list[tuple[str, str]], str]] = []
        count = 0
        for position, record in enumerate(records):
            try:
                turns, code = self.record_turns(record, _rng(seed, self.name, record, position))
            except TemplateSpecError as exc:
                raise TemplateSpecError(f"{_where(record)}: {exc}") from exc
            turns = turns[: self.max_turns]
            if not turns:
                continue
            if pending and self.max_turns is not None and count + len(turns) > self.max_turns:
                yield self._conversation(pending, seed)
                pending, count = [], 0
            pending.append((record, turns, code))
            count += len(turns)
        if pending:
            yield self._conversation(pending, seed)

    def _conversation(self, parts: list[tuple[Mapping[str, Any], list[tuple[str, str]], str]], seed: int) -> Conversation:
        try:
            return self._assemble(parts, seed)
        except TemplateSpecError as exc:
            raise TemplateSpecError(f"{_where(parts[0][0])}: {exc}") from exc

    def _assemble(self, parts: list[tuple[Mapping[str, Any], list[tuple[str, str]], str]], seed: int) -> Conversation:
        first = parts[0][0]
        rng = _rng(seed, self.name, first, -1)
        pieces: list[str] = []
        id_parts = [self.name]
        if self.context is not None:
            _, context = self.context.render(rng, first)
            pieces.append(context)
        if self.instructions is not None:
            i, instruction = self.instructions.render(rng, first)
            placement = self.placement[rng.randrange(len(self.placement))]
            pieces.insert(0 if placement == "before" else len(pieces), instruction)
            id_parts.append(f"i{i}-{placement}")
        messages: list[dict[str, str]] = []
        for _, turns, code in parts:
            id_parts.append(code)
            for human, bot in turns:
                if not messages:
                    human = "\n\n".join(piece for piece in [*pieces, human] if piece)
                messages.append({"role": USER_ROLE, "content": human})
                messages.append({"role": ASSISTANT_ROLE, "content": bot})
        return Conversation(messages=messages, template_id="/".join(id_parts))


def _where(record: Mapping[str, Any]) -> str:
    return getattr(record, "where", "record")


def _utterances(record: Mapping[str, Any], field: str) -> list[str]:
    utterances = record.get(field) or []
    if not isinstance(utterances, list) or not all(isinstance(u, str) for u in utterances):
        raise TemplateSpecError(
            f"`dialogue: {field}` needs a list of strings; for role/content messages use `messages: {field}`"
        )
    return utterances


def chat_turns(messages: Any, field: str) -> list[tuple[str, str]]:
    """(human, bot) turns from role/content messages.

    ``system`` content opens the next user turn; consecutive messages of one role
    are joined; a conversation ending on a user message gets an empty bot turn
    (which quality counts as ``empty_turn``, instead of losing the message).
    """
    if not isinstance(messages, list):
        raise TemplateSpecError(f"`messages: {field}` needs a list of {{role, content}} mappings, got {type(messages).__name__}")
    merged: list[list[str]] = []
    system: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str) or "role" not in message:
            raise TemplateSpecError(f"{field}[{index}]: expected {{role, content}} with string content, got {message!r:.80}")
        role = ROLES.get(str(message["role"]).lower())
        if role is None:
            raise TemplateSpecError(f"{field}[{index}]: unknown role {message['role']!r} (known: {', '.join(ROLES)})")
        content = message["content"]
        if role == "system":
            system.append(content)
            continue
        if role == USER_ROLE and system:
            content, system = "\n\n".join([*system, content]), []
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n\n" + content
        else:
            merged.append([role, content])
    if merged and merged[0][0] == ASSISTANT_ROLE:
        raise TemplateSpecError(f"`messages: {field}` starts with an assistant message")
    contents = [content for _, content in merged] + ([""] if len(merged) % 2 else [])
    return [(contents[i], contents[i + 1]) for i in range(0, len(contents), 2)]


def group_key(record: Mapping[str, Any], field: str, path: Path) -> Any:
    if field not in record:
        raise TemplateSpecError(f"{path}: group_by field {field!r} missing from a record (has {sorted(record)})")
    return record[field]


def _rng(seed: int, constituent: str, record: Mapping[str, Any], position: int) -> random.Random:
    """A generator determined by the seed, the constituent and the record's content only."""
    payload = json.dumps([seed, constituent, position, record], sort_keys=True, default=str, ensure_ascii=False)
    return random.Random(hashlib.sha256(payload.encode("utf-8")).digest())
