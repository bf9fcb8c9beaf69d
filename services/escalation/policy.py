"""The routing policy: who answers a turn, and why.

The rules and their thresholds live in a YAML file the platform team edits (`policy.yaml` next
to this module by default); `PolicyStore` re-reads it when it changes, without a restart.
`decide` is a pure function of the turn, the loaded `Policy` and two facts the turn does not
carry yet (the customer's tier and the previous reply's flags).

Decisions come from structured signals that earlier stages attached (never from parsing an
LLM's text), so the same turn always gets the same verdict and every verdict can be explained:
each firing rule becomes one reason, with the numbers and words that made it fire.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from prometheus_client import Counter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from shared.events import (
    EmotionLabel,
    HistoryTurn,
    ReplyFlag,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    Severity,
    SignalName,
    TurnContextualized,
)

log = logging.getLogger(__name__)

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")
"""The shipped policy, next to this module."""

NO_RULE_MATCHED = "no_rule_matched"

RELOADS = Counter(
    "cbd_escalation_policy_reloads_total", "Escalation policy files loaded after a change."
)
RELOAD_ERRORS = Counter(
    "cbd_escalation_policy_reload_errors_total",
    "Changed escalation policy files that were invalid; the previous policy was kept.",
)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Similarity = Annotated[float, Field(gt=0.0, le=1.0)]

# Short messages ("yes", "thank you", "ok") repeat naturally in any conversation; like the
# emotion service's repetition signal, only messages of at least three words count as a loop.
_LOOP_MIN_TOKENS = 3
_EVIDENCE_CHARS = 80
_NON_WORD = re.compile(r"[^\w\s]+")


class PolicyError(ValueError):
    """A policy file that cannot be used: unreadable, not YAML, or not a valid policy."""


# --- text helpers ------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lowercase word tokens, apostrophes dropped ("it's" -> "its") and punctuation removed."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return _NON_WORD.sub(" ", text).split()


def similarity(a: str, b: str) -> float:
    """Token Jaccard similarity of two texts after normalisation (1.0 for identical wording).

    Word order and punctuation are ignored on purpose: "Where is my order??" and "where is
    my order" are the same question.
    """
    left, right = set(words(a)), set(words(b))
    union = left | right
    if not union:
        return 1.0
    return len(left & right) / len(union)


def _quote(text: str) -> str:
    """Customer or bot text for a reason's detail: one line, clipped, quoted."""
    text = " ".join(text.split())
    if len(text) > _EVIDENCE_CHARS:
        text = text[: _EVIDENCE_CHARS - 1] + "\u2026"
    return repr(text)


# --- the policy file's schema ------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Everything a rule may look at for one turn."""

    turn: TurnContextualized
    customer_tier: str | None
    last_reply_flags: tuple[str, ...]
    bot_turns: int | None = None
    """Customer turns since the bot last took the conversation over from a person, if known."""
    conversation_id: str | None = None
    """This turn's conversation, which tells an issue opened in an earlier one (None: unknown)."""


class _Model(BaseModel):
    # extra="forbid" turns a typo ("min_intesity", "strong_emoton") into an error that names it,
    # instead of a rule that quietly runs with its defaults or not at all.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Model):
    """One escalation rule: its settings, and how to tell whether it fires on a turn."""

    enabled: bool = True
    severity: Severity = "low"
    """How urgent the ticket is when this rule fires; the queue is ordered by it."""

    def evaluate(self, facts: Facts) -> str | None:
        """The evidence when the rule fires on this turn, None when it does not."""
        raise NotImplementedError


class ExplicitRequestRule(Rule):
    """The customer asked for a person (the emotion service's `human_request` signal)."""

    def evaluate(self, facts: Facts) -> str | None:
        asked = [s.evidence for s in facts.turn.emotion.signals if s.name == "human_request"]
        if not asked:
            return None
        return "customer asked: " + ", ".join(_quote(e) for e in dict.fromkeys(asked))


class EmotionRule(Rule):
    """The message's emotion is one of `labels`, felt strongly and recognised confidently."""

    labels: list[EmotionLabel]
    min_intensity: Fraction
    min_confidence: Fraction

    def evaluate(self, facts: Facts) -> str | None:
        emotion = facts.turn.emotion
        # A degraded analysis is a neutral stand-in for a model failure: it shows no emotion.
        if emotion.degraded or emotion.label not in self.labels:
            return None
        if emotion.intensity < self.min_intensity or emotion.confidence < self.min_confidence:
            return None
        return (
            f"{emotion.label.value} at intensity {emotion.intensity:.2f} \u2265 "
            f"{self.min_intensity:.2f}, confidence {emotion.confidence:.2f} \u2265 "
            f"{self.min_confidence:.2f}"
        )


class WorseningRule(Rule):
    """Several negative customer turns in a row (from the trajectory; inert without one)."""

    min_negative_streak: Annotated[int, Field(ge=1)]

    def evaluate(self, facts: Facts) -> str | None:
        trajectory = facts.turn.trajectory
        if trajectory is None or trajectory.negative_streak < self.min_negative_streak:
            return None
        return f"negative streak {trajectory.negative_streak} \u2265 {self.min_negative_streak}"


class EscalationRiskRule(Rule):
    """The emotion service's trajectory risk score reached the threshold."""

    threshold: Fraction

    def evaluate(self, facts: Facts) -> str | None:
        trajectory = facts.turn.trajectory
        if trajectory is None or trajectory.escalation_risk < self.threshold:
            return None
        detail = f"escalation risk {trajectory.escalation_risk:.2f} \u2265 {self.threshold:.2f}"
        if trajectory.risk_factors:
            detail += " (" + ", ".join(trajectory.risk_factors) + ")"
        return detail


class CustomerLoopRule(Rule):
    """The customer keeps asking the same thing, in the same or in other words."""

    min_repeats: Annotated[int, Field(ge=1)]
    similarity: Similarity
    """Token overlap that makes two messages the same ask (earlier turns memory did not
    compare by meaning: old events, a memory that could not embed)."""
    meaning_similarity: Similarity | None = None
    """Cosine of the sentence embeddings that makes two messages the same ask, for the turns
    memory compared by meaning; None compares every turn by token overlap."""

    def _alike(self, text: str, past: HistoryTurn) -> float | None:
        """How alike an earlier customer turn is, when it counts as a repeat; else None."""
        if self.meaning_similarity is not None and past.similarity is not None:
            alike = past.similarity
            return alike if alike >= self.meaning_similarity else None
        alike = similarity(text, past.text)
        return alike if alike >= self.similarity else None

    def evaluate(self, facts: Facts) -> str | None:
        text = facts.turn.message.text
        repeats = 0
        by_meaning = False
        if len(set(words(text))) >= _LOOP_MIN_TOKENS:
            for past in facts.turn.context.recent_turns:
                # Short acknowledgements ("yes", "ok thanks") repeat naturally, whatever their
                # embeddings say: both sides need three words.
                if past.role is not Role.CUSTOMER or len(set(words(past.text))) < _LOOP_MIN_TOKENS:
                    continue
                if self._alike(text, past) is not None:
                    repeats += 1
                    by_meaning = by_meaning or past.similarity is not None
        # The emotion service saw a repeat in its own history even when memory's window (or a
        # memory outage) shows none: that still counts as one.
        if repeats == 0 and any(s.name == "repetition" for s in facts.turn.emotion.signals):
            repeats = 1
        if repeats < self.min_repeats:
            return None
        how = " (by meaning)" if by_meaning else ""
        return (
            f"customer repeated themselves {repeats} times{how} \u2265 {self.min_repeats}: "
            f"{_quote(text)}"
        )


class RepeatContactRule(Rule):
    """The customer says this is not the first time they ask, or comes back about an issue
    that is still open from an earlier conversation."""

    min_weight: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """The `repeat_contact` signal's weight that fires on its own (1.0: strong cues only;
    chasing cues such as "any news?" weigh 0.5)."""
    across_conversations: bool = True
    """Also fire when an issue opened in an earlier conversation is raised again in this
    turn, or chased (any `repeat_contact` cue) while it is open."""

    def evaluate(self, facts: Facts) -> str | None:
        turn = facts.turn
        cues = [s for s in turn.emotion.signals if s.name == "repeat_contact"]
        found: list[str] = []
        said = [s.evidence for s in cues if s.weight >= self.min_weight]
        if said:
            found.append("customer said: " + ", ".join(_quote(e) for e in dict.fromkeys(said)))
        if self.across_conversations and facts.conversation_id is not None:
            earlier = [
                issue
                for issue in turn.context.open_issues
                if issue.status != "resolved" and issue.conversation_id != facts.conversation_id
            ]
            # Memory updates an open issue from the turn that raises it again before it builds
            # the context, so an update stamped with this message's time came from this turn.
            again = [i for i in earlier if i.updated_at == turn.message.received_at]
            chased = earlier[:1] if cues and not again else []
            for issue in again:
                found.append(f"{issue.category} issue from an earlier conversation raised again")
            for issue in chased:
                found.append(
                    f"chasing the {issue.category} issue still open from an earlier "
                    f"conversation: {_quote(issue.summary)}"
                )
        return "; ".join(found) or None


class BotLoopRule(Rule):
    """The bot's last two replies are near-identical: it is stuck."""

    similarity: Similarity

    def evaluate(self, facts: Facts) -> str | None:
        replies = [t.text for t in facts.turn.context.recent_turns if t.role is Role.BOT][-2:]
        if len(replies) < 2 or min(len(set(words(r))) for r in replies) < _LOOP_MIN_TOKENS:
            return None
        alike = similarity(*replies)
        if alike < self.similarity:
            return None
        return (
            f"bot's last two replies {alike:.0%} alike \u2265 {self.similarity:.0%}: "
            f"{_quote(replies[-1])}"
        )


class NoResolutionRule(Rule):
    """The conversation has gone on too long without being resolved."""

    max_customer_turns: Annotated[int, Field(ge=1)]

    def evaluate(self, facts: Facts) -> str | None:
        turn = facts.turn
        # Memory only keeps a window of recent turns, so the trajectory's count (the whole
        # conversation) is preferred; the window still counts when the trajectory is missing
        # or was reset, and whichever is larger is the truer lower bound.
        if facts.bot_turns is not None:
            # After a person handed the conversation back, the bot gets a fresh run.
            turns = facts.bot_turns
        else:
            seen = 1 + sum(1 for t in turn.context.recent_turns if t.role is Role.CUSTOMER)
            turns = max(seen, turn.trajectory.turns if turn.trajectory is not None else 0)
        if turns <= self.max_customer_turns:
            return None
        return f"{turns} customer turns > {self.max_customer_turns}"


class SensitiveTopicRule(Rule):
    """A topic a person should handle, shown by a named signal or a keyword in the message."""

    signals: list[SignalName]
    keywords: list[str]

    @field_validator("keywords")
    @classmethod
    def _keywords_have_words(cls, value: list[str]) -> list[str]:
        for keyword in value:
            if not words(keyword):
                raise ValueError(f"keyword {keyword!r} has no words in it")
        return value

    def evaluate(self, facts: Facts) -> str | None:
        found = [
            f"{s.name} signal: {_quote(s.evidence)}"
            for s in facts.turn.emotion.signals
            if s.name in self.signals
        ]
        # Whole-word phrase match on normalised text, so "scam" does not match "scampi" and
        # "self-harm" matches "self harm".
        text = f" {' '.join(words(facts.turn.message.text))} "
        hits = [k for k in self.keywords if f" {' '.join(words(k))} " in text]
        if hits:
            found.append("keywords: " + ", ".join(_quote(k) for k in hits))
        return "; ".join(found) or None


class HighValueNegativeRule(Rule):
    """A negative turn from a customer in one of `tiers` (inert until the tier is known)."""

    tiers: list[str]
    max_sentiment: Annotated[float, Field(ge=-1.0, le=1.0)]

    def evaluate(self, facts: Facts) -> str | None:
        tier = (facts.customer_tier or "").strip().lower()
        if not tier or tier not in {t.strip().lower() for t in self.tiers}:
            return None
        sentiment = facts.turn.emotion.sentiment
        if facts.turn.emotion.degraded or sentiment > self.max_sentiment:
            return None
        return f"{tier} customer, sentiment {sentiment:+.2f} \u2264 {self.max_sentiment:+.2f}"


class GenerationFlagsRule(Rule):
    """The previous reply was flagged by generation (fallback text, needs a human, guardrail)."""

    flags: list[ReplyFlag]
    """Only flags generation can raise (`shared.events.ReplyFlag`): a typo is refused."""

    def raised(self, reply_flags: Sequence[str]) -> list[str]:
        """The reply's flags this rule escalates on, each once, in the reply's order."""
        return [f for f in dict.fromkeys(reply_flags) if f in self.flags]

    def evaluate(self, facts: Facts) -> str | None:
        raised = self.raised(facts.last_reply_flags)
        if not raised:
            return None
        return "last reply flagged: " + ", ".join(raised)


class Rules(_Model):
    """The policy's rules, checked in this order; a rule left out of the file is off."""

    explicit_request: ExplicitRequestRule | None = None
    strong_emotion: EmotionRule | None = None
    distress: EmotionRule | None = None
    worsening: WorseningRule | None = None
    escalation_risk: EscalationRiskRule | None = None
    customer_loop: CustomerLoopRule | None = None
    repeat_contact: RepeatContactRule | None = None
    bot_loop: BotLoopRule | None = None
    no_resolution: NoResolutionRule | None = None
    sensitive_topic: SensitiveTopicRule | None = None
    high_value_negative: HighValueNegativeRule | None = None
    generation_flags: GenerationFlagsRule | None = None

    def enabled(self) -> Iterator[tuple[str, Rule]]:
        """Each enabled rule with its name, in declaration order."""
        for name in type(self).model_fields:
            rule = getattr(self, name)
            if isinstance(rule, Rule) and rule.enabled:
                yield name, rule


class Policy(_Model):
    """A whole escalation policy, as written in the YAML file."""

    version: Literal[1]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    rules: Rules


# --- loading -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently let the last win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as 'where: what' lines, each naming the offending key or value."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problem = f"{where}: {error['msg']}"
        if error["type"] != "extra_forbidden" and not isinstance(error["input"], dict | list):
            problem += f" (got {error['input']!r})"
        problems.append(problem)
    return "; ".join(problems)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise `PolicyError` naming the file and the problem."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from exc
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a mapping with version, name and rules")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{path}: invalid policy: {_describe(exc)}") from exc


def _signature(path: Path) -> tuple[int, int] | None:
    """What tells a changed file: modification time and size (None when it cannot be seen)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class PolicyStore:
    """The current policy, re-read from its file when the file changes.

    The file is checked at most every `check_interval_s` seconds, so `current()` is cheap
    enough to call on every turn. An invalid new file is logged and counted once, and the
    previous policy stays in force until the file is fixed. The first load happens in the
    constructor and raises `PolicyError`: a service should not start without a valid policy.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_POLICY_PATH,
        check_interval_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the policy now; later changes are picked up by `current()`."""
        self.path = Path(path)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = _signature(self.path)
        self._policy = load_policy(self.path)
        self._checked_at = clock()

    def current(self) -> Policy:
        """The policy in force, after re-reading the file if it changed since the last check."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self.check_interval_s:
                return self._policy
            self._checked_at = now
            signature = _signature(self.path)
            if signature == self._seen:
                return self._policy
            # Remember the change even if it is invalid, so one bad edit is reported once and
            # not again at every check until someone fixes it.
            self._seen = signature
            try:
                policy = load_policy(self.path)
            except PolicyError as exc:
                RELOAD_ERRORS.inc()
                log.error("escalation policy not reloaded, keeping %r: %s", self._policy.name, exc)
                return self._policy
            RELOADS.inc()
            log.info(
                "escalation policy reloaded from %s: %r (was %r)",
                self.path,
                policy.name,
                self._policy.name,
            )
            self._policy = policy
            return policy


# --- deciding ----------------------------------------------------------------------------------


def decide(
    turn: TurnContextualized,
    policy: Policy,
    *,
    customer_tier: str | None = None,
    last_reply_flags: Sequence[str] = (),
    bot_turns: int | None = None,
    conversation_id: str | None = None,
) -> RoutingDecision:
    """Route the turn: to a human when any enabled rule fires, with one reason per rule.

    `customer_tier` and `last_reply_flags` are facts the turn does not carry yet; rules that
    need them stay inert while they are missing, as `repeat_contact` stays blind to issues of
    earlier conversations without `conversation_id`. When no rule fires, the bot answers.
    """
    facts = Facts(
        turn=turn,
        customer_tier=customer_tier,
        last_reply_flags=tuple(last_reply_flags),
        bot_turns=bot_turns,
        conversation_id=conversation_id,
    )
    reasons = [
        RouteReason(code=name, detail=detail, severity=rule.severity)
        for name, rule in policy.rules.enabled()
        if (detail := rule.evaluate(facts))
    ]
    if reasons:
        return RoutingDecision(target=RouteTarget.HUMAN, reasons=reasons, policy=policy.name)
    return RoutingDecision(
        target=RouteTarget.BOT,
        reasons=[RouteReason(code=NO_RULE_MATCHED, detail="no enabled escalation rule fired")],
        policy=policy.name,
    )
