"""The tiny model's sizes: `TinyModelSpec`, and the named sizes `SPECS` the recipes pick.

Every hidden and intermediate size is a multiple of 64 and at least 64, so 4-bit quantisation
(blocks of 64) applies to every linear layer, vision tower included.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from eva_core.tiny_model.qwen import QWEN_ADDED_TOKENS

QK_INIT_STD = 0.2  # decoder query/key weights; see `build_tiny_model`


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model. Defaults give 0.82M parameters and build in about a second.

    Attributes:
        vocab_size: target size of the trained BPE vocabulary plus the 22 added tokens (the
            trainer may stop short on a small corpus; the config uses the real size).
        hidden_size: decoder width; a multiple of 64.
        intermediate_size: decoder MLP width; a multiple of 64.
        num_hidden_layers: decoder layers.
        num_attention_heads: decoder heads; head_dim = hidden_size / heads must be even and
            split into M-RoPE's (temporal, height, width) sections, see `mrope_section`.
        num_key_value_heads: grouped-query KV heads.
        vision_hidden_size: vision tower width; a multiple of 64.
        vision_intermediate_size: vision MLP width; a multiple of 64.
        vision_depth: vision blocks; the last one uses full attention, the others windows.
        vision_heads: vision heads.
        corpus_lines: lines of generated text the tokenizer is trained on.
        extra_text: more text the tokenizer's corpus repeats (for instance the wording of the
            training trajectories), so that its words become single tokens; empty by default.
        time_tokens: the clock times of the first `time_tokens` seconds, "00:00", "00:01", ...
            as the tool labels frames and the synthetic questions name windows, become whole
            tokens (added after Qwen's; 0: none, digits one by one as in Qwen). A pretrained model
            reads "01:20" as one time; a random 4-layer one, given "0", "1", ":", "2", "0", did not
            learn within an SFT budget to tell which of 8 windows a question names (docs/results.md,
            "History"), so a learner that must plan from a named time gets them whole.
        qk_init_std: std of the decoder's query/key weights (see `build_tiny_model`); None keeps
            transformers' initialisation (std 0.02), which a model meant to learn needs: sharp
            random attention saturates the softmax, and the gradient through it vanishes.
    """

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_depth: int = 2
    vision_heads: int = 2
    corpus_lines: int = 4000
    extra_text: str = ""
    time_tokens: int = 0
    qk_init_std: float | None = QK_INIT_STD

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "vision_hidden_size", "vision_intermediate_size"):
            value = getattr(self, name)
            if value < 64 or value % 64:
                raise ValueError(f"{name} must be a multiple of 64 and at least 64, got {value}")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 8:
            raise ValueError("hidden_size / num_attention_heads must be a multiple of 8 (M-RoPE sections)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.vocab_size < 256 + len(QWEN_ADDED_TOKENS) + 1:
            raise ValueError("vocab_size must exceed the 256 byte tokens plus the added tokens")

    @classmethod
    def scaled(cls, hidden_size: int, layers: int) -> TinyModelSpec:
        """A larger variant for benchmarks: MLP 4x wide, one head per 64 channels, half as many KV
        heads (hidden 512 and 4 layers is the benchmarks' 17M-parameter model)."""
        return cls(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers,
                   num_attention_heads=max(1, hidden_size // 64), num_key_value_heads=max(1, hidden_size // 128))

    @property
    def mrope_section(self) -> list[int]:
        """M-RoPE's split of head_dim / 2 rotary frequencies into (t, h, w): Qwen's 16:24:24 ratio."""
        half = self.hidden_size // self.num_attention_heads // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


# The wording of eva-data's oracle trajectories and of the synthetic questions (summary, plan,
# reflection, the scan, colours and shapes): the `learner` tokenizer makes these words whole tokens,
# which halves the length of a trajectory (and so the cost of a step and of a reply).
LEARNER_TEXT = (
    "Summary: I have not seen the video yet. It is 39 seconds long, and the question asks about the colour of a "
    "shape.\nPlan: colour shows even at low resolution, so I will scan the whole video at low resolution (12 frames) "
    "to find the shape.\nSummary: the scan shows a red shape at [00:12]; the rest is grey background with moving "
    "blocks. It is the only coloured shape in the video, so it is the one the question asks about.\nReflection: the "
    "shape is green, which is option B.\n<answer>B</answer> A shape carrying the character 'K' appears briefly in "
    "the video. What colour is it?\nA. red\nB. green\nC. blue\nD. yellow\nE. orange\nF. purple\nAnswer with the "
    "option's letter from the given choices directly. Plan: shapes like this are on screen for a few seconds only, "
    "so I will first scan the whole video at low resolution to find when coloured shapes appear, then look at those "
    "moments at full resolution. circle square triangle diamond letter digit character candidates close looks. At "
    "this resolution no character can be read. I will look at each of these moments at full resolution."
)

# The quickstart's model (docs/train.md, "The embedded default"): wide and deep enough to learn
# the protocol's format and a colour from the frames in minutes on 2 CPU cores; 3.8M parameters,
# with a tokenizer that knows the trajectories' words.
LEARNER = TinyModelSpec(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, vision_hidden_size=128,
                        vision_intermediate_size=256, vision_depth=2, vision_heads=2, extra_text=LEARNER_TEXT,
                        qk_init_std=None)

SPECS: dict[str, TinyModelSpec] = {
    "tiny": TinyModelSpec(),
    "learner": LEARNER,
    # The learner that reads clock times as whole tokens, for recipes whose calls depend on a time
    # the question names (the `seek-hint` proof, docs/results.md): the same sizes and corpus, and
    # "00:00" ... "09:59" as 600 added tokens.
    "planner": replace(LEARNER, time_tokens=600),
}
"""Named sizes: `tiny` (tests, the default), `learner` (the quickstart's recipe) and `planner`."""
