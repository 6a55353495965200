"""What to build: one dataclass for every kind, validated up front so bad flags fail before any work."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("sft", "preference", "prompts")
PAIR_SOURCES = ("crows_pairs", "rewrite_pairs")
PROMPT_SOURCES = ("rtp", "toxigen", "bold")
SOURCE_ALIASES = {"srllm": "rewrite_pairs", "crows": "crows_pairs"}
CROWS_STRATEGIES = ("parity", "neutral_over_more", "less_over_more")
DEFAULT_CROWS_STRATEGY = "parity"
PROMPT_STYLES = ("continuation", "rewrite")

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful, respectful writing assistant. You rewrite text so that it keeps its meaning and "
    "facts but contains no stereotypes, slurs, insults or demeaning generalisations about any person or "
    "group."
)
DEFAULT_INSTRUCTION = "Rewrite this text without bias:\n\n{text}"


@dataclass
class BuildConfig:
    """Options of ``safealign data build`` (also readable from a YAML file with the same keys)."""

    kind: str = field(default="sft", metadata={"help": f"what to build: {', '.join(KINDS)}"})
    source: str = field(
        default="rewrite_pairs",
        metadata={
            "help": "crows_pairs or rewrite_pairs (alias srllm) for sft/preference; a comma list of "
            "rtp, toxigen, bold for prompts"
        },
    )
    out: str = field(default="", metadata={"help": "output directory (written atomically)"})
    path: str | None = field(
        default=None,
        metadata={"help": "explicit source file (else SAFEALIGN_DATA_DIR, else a checked download)"},
    )
    strategy: str | None = field(
        default=None,
        metadata={
            "help": f"CrowS-Pairs preference strategy: {', '.join(CROWS_STRATEGIES)} "
            f"(default {DEFAULT_CROWS_STRATEGY}: it cannot teach the reversed stereotype)"
        },
    )
    prompt_style: str | None = field(
        default=None,
        metadata={
            "help": "CrowS-Pairs preference prompts: continuation (shared sentence prefix, plain text; "
            "default) or rewrite (the chat rewrite instruction)"
        },
    )
    test_fraction: float = field(
        default=0.2, metadata={"help": "fraction of groups held out as the test split"}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={
            "help": "fraction of groups carved from the training side as a validation split (for "
            "choosing recipes; never trained on)"
        },
    )
    seed: int = field(default=0, metadata={"help": "split seed (and sampling seed for --limit)"})
    on_bad_row: str = field(
        default="error", metadata={"help": "error (stop, write nothing) or skip (count in card)"}
    )
    text_col: str = field(
        default="biased_text", metadata={"help": "rewrite pairs: column with the unsafe text"}
    )
    rewrite_col: str = field(
        default="debiased_text", metadata={"help": "rewrite pairs: column with the rewrite"}
    )
    label_col: str | None = field(
        default=None, metadata={"help": "rewrite pairs: label column (default: label)"}
    )
    bias_col: str | None = field(
        default=None, metadata={"help": "rewrite pairs: bias-type column (default: aspect)"}
    )
    system_prompt: str = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "system message of rewrite prompts"}
    )
    instruction: str = field(
        default=DEFAULT_INSTRUCTION, metadata={"help": "user message; must contain {text}"}
    )
    augment: list[str] = field(
        default_factory=list,
        metadata={"help": "counterfactual augmentation axes for train rows: gender, religion"},
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "render chat rows to plain strings with this model's chat template "
            "(e.g. smollm2-135m-instruct)"
        },
    )
    min_words: int = field(default=3, metadata={"help": "prompts: drop prompts with fewer words"})
    max_words: int = field(default=200, metadata={"help": "prompts: drop prompts with more words"})
    max_per_group: int | None = field(
        default=None, metadata={"help": "prompts: keep at most this many per group"}
    )
    limit: int | None = field(
        default=None, metadata={"help": "keep a seeded random sample of this many rows"}
    )
    toxigen_mode: str = field(
        default="block", metadata={"help": "toxigen prompts: block (few-shot) or statements"}
    )
    force: bool = field(default=False, metadata={"help": "rebuild even if the output is up to date"})

    def __post_init__(self) -> None:
        self.out = str(self.out)
        self.path = None if self.path is None else str(self.path)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not self.out:
            raise ValueError("an output directory is required (--out DIR)")
        names = [SOURCE_ALIASES.get(s.strip(), s.strip()) for s in self.source.split(",") if s.strip()]
        allowed = PROMPT_SOURCES if self.kind == "prompts" else PAIR_SOURCES
        unknown = [n for n in names if n not in allowed]
        if not names or unknown:
            raise ValueError(
                f"source {self.source!r} cannot build {self.kind}; choose from {', '.join(allowed)}"
                + (" (comma-separated)" if self.kind == "prompts" else "")
            )
        if self.kind != "prompts" and len(names) > 1:
            raise ValueError(f"{self.kind} builds take one source, got {', '.join(names)}")
        if self.path and len(names) > 1:
            raise ValueError("--path names one file; build one prompt source at a time with it")
        self.source = ",".join(names)
        crows_preference = self.kind == "preference" and self.source == "crows_pairs"
        if self.strategy is not None and not crows_preference:
            raise ValueError("--strategy applies to preference data from crows_pairs only")
        if self.prompt_style is not None and not crows_preference:
            raise ValueError("--prompt-style applies to preference data from crows_pairs only")
        if crows_preference:
            self.strategy = self.strategy or DEFAULT_CROWS_STRATEGY
            self.prompt_style = self.prompt_style or "continuation"
            if self.strategy not in CROWS_STRATEGIES:
                raise ValueError(
                    f"unknown strategy {self.strategy!r}; choose one of {', '.join(CROWS_STRATEGIES)}"
                )
            if self.prompt_style not in PROMPT_STYLES:
                raise ValueError(
                    f"unknown prompt style {self.prompt_style!r}; choose {', '.join(PROMPT_STYLES)}"
                )
            if self.strategy == "parity" and self.prompt_style == "rewrite":
                raise ValueError(
                    "parity needs --prompt-style continuation: preferring the stereotyped sentence as a "
                    "'rewrite without bias' half of the time would teach the model to keep bias"
                )
            if self.augment:
                raise ValueError(
                    "--augment cannot be used for CrowS-Pairs preferences: swapping the group words reverses "
                    "which sentence is the stereotype, so chosen/rejected would be wrong"
                )
            if self.chat_template and self.prompt_style == "continuation":
                raise ValueError(
                    "--chat-template renders chat rows; continuation prompts are plain text already"
                )
        from data_builders.augment import axes

        unknown_axes = [a for a in self.augment if a not in axes()]
        if unknown_axes:
            raise ValueError(f"unknown --augment axis {unknown_axes[0]!r}; choose from {', '.join(axes())}")
        if "{text}" not in self.instruction:
            raise ValueError("--instruction must contain the placeholder {text}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0 - self.test_fraction:
            raise ValueError(f"--val-fraction must be in [0, 1 - test fraction), got {self.val_fraction}")
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"--on-bad-row must be error or skip, got {self.on_bad_row!r}")
        if self.min_words < 0 or self.max_words < max(self.min_words, 1):
            raise ValueError(
                f"need 0 <= --min-words <= --max-words, got {self.min_words} and {self.max_words}"
            )
        for name in ("max_per_group", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.toxigen_mode not in ("block", "statements"):
            raise ValueError(f"--toxigen-mode must be block or statements, got {self.toxigen_mode!r}")

    @property
    def sources(self) -> list[str]:
        return self.source.split(",")
