"""Tools the policy may call during a rollout: the recipe's tool options, finding a call, the observation tokens.

A tool call is the text between `tool_call_open` (default a ```` ```python ```` fence) and the first of
`tool_stop_strings` after it, inside one turn of the model's output. The code runs in the code reward's sandbox
(rewards/python_tool.py); what it printed (and the last line of its error, if it raised) becomes the observation:
its first `max_tool_output_tokens` tokens placed in `observation_template` at `{output}`, as token ids that the
policy did not sample (rlreason/tool_rollout.py masks them out of the loss)."""

from __future__ import annotations

from dataclasses import dataclass

TOOLS = ("python",)
DEFAULT_OPEN = "```python"
DEFAULT_STOPS = ("```",)
# Starts and ends on a newline, so the observation's tokens are the same whether it is encoded alone (a rollout)
# or inside a whole demonstration (SFT on tool_demonstration): byte-level BPE never merges across a newline here.
DEFAULT_TEMPLATE = "\n```output\n{output}\n```\n"


@dataclass(frozen=True)
class ToolConfig:
    """The tool options of a recipe (RLConfig fields of the same names)."""

    tools: tuple = TOOLS
    max_tool_calls: int = 4
    tool_timeout: float = 5.0
    max_tool_output_tokens: int = 64
    tool_call_open: str = DEFAULT_OPEN
    tool_stop_strings: tuple = DEFAULT_STOPS
    observation_template: str = DEFAULT_TEMPLATE
    tool_persistent_state: bool = False

    def __post_init__(self):
        check_tool_options(self.tools, self.max_tool_calls, self.tool_timeout, self.max_tool_output_tokens,
                           self.tool_call_open, self.tool_stop_strings, self.observation_template)

    @classmethod
    def from_args(cls, args) -> ToolConfig | None:
        """The tool options of training arguments (or any object with those attributes); None without `tools`."""
        if not getattr(args, "tools", None):
            return None
        return cls(tools=tuple(args.tools), max_tool_calls=args.max_tool_calls, tool_timeout=args.tool_timeout,
                   max_tool_output_tokens=args.max_tool_output_tokens, tool_call_open=args.tool_call_open,
                   tool_stop_strings=tuple(args.tool_stop_strings), observation_template=args.observation_template,
                   tool_persistent_state=bool(args.tool_persistent_state))


def check_tool_options(tools, max_tool_calls, tool_timeout, max_tool_output_tokens, tool_call_open,
                       tool_stop_strings, observation_template) -> None:
    """Raise RecipeError, one line naming the key, for a tool option the rollout cannot use."""
    from rlreason.config import RecipeError

    if tools is None:
        return
    if isinstance(tools, str) or not all(isinstance(t, str) for t in tools):
        raise RecipeError(f"tools: give a list of tool names, e.g. tools: [python], not {tools!r}")
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise RecipeError(f"tools: '{unknown[0]}' is not a tool; the tools are {', '.join(TOOLS)}")
    if not tools:
        return
    if isinstance(max_tool_calls, bool) or not isinstance(max_tool_calls, int) or max_tool_calls < 1:
        raise RecipeError(f"max_tool_calls: {max_tool_calls!r} must be an integer >= 1")
    if isinstance(tool_timeout, bool) or not isinstance(tool_timeout, (int, float)) or not 0 < tool_timeout <= 600:
        raise RecipeError(f"tool_timeout: {tool_timeout!r} must be seconds in (0, 600]")
    if isinstance(max_tool_output_tokens, bool) or not isinstance(max_tool_output_tokens, int) or \
            max_tool_output_tokens < 1:
        raise RecipeError(f"max_tool_output_tokens: {max_tool_output_tokens!r} must be an integer >= 1")
    if not isinstance(tool_call_open, str) or not tool_call_open.strip():
        raise RecipeError(f"tool_call_open: {tool_call_open!r} must be a non-empty string (the text that opens a call)")
    if isinstance(tool_stop_strings, str) or not tool_stop_strings or \
            not all(isinstance(s, str) and s for s in tool_stop_strings):
        raise RecipeError(f"tool_stop_strings: {tool_stop_strings!r} must be a list of non-empty strings")
    if not isinstance(observation_template, str) or observation_template.count("{output}") != 1:
        raise RecipeError(f"observation_template: {observation_template!r} must hold {{output}} exactly once")


def find_tool_call(text: str, config: ToolConfig) -> str | None:
    """The code of the tool call that `text` (one turn of model output) closes, or None when it closes none:
    what lies between the first `tool_call_open` and the first stop string after it."""
    start = text.find(config.tool_call_open)
    if start < 0:
        return None
    body = start + len(config.tool_call_open)
    ends = [i for i in (text.find(stop, body) for stop in config.tool_stop_strings) if i >= 0]
    if not ends:
        return None
    code = text[body:min(ends)]
    return code[1:] if code.startswith("\n") else code


def observation_text(result: dict) -> str:
    """What the model is shown of a call: its stdout, then the error's last line when it raised or timed out
    (trailing newlines dropped: the template places the text)."""
    output, error = (result.get("output") or "").rstrip("\n"), result.get("error")
    return f"{output}\n{error}" if output and error else (error or output)


def tool_demonstration(code: str, output: str, config: ToolConfig | None = None) -> str:
    """The text of one tool call and its observation as a rollout produces them (for SFT cold-start data):
    `tool_call_open`, the code, the first stop string, then the observation template around `output`."""
    config = config or ToolConfig()
    return f"{config.tool_call_open}\n{code}\n{config.tool_stop_strings[0]}" + \
        config.observation_template.replace("{output}", output.rstrip("\n"))


def encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as plain text: no special tokens added, and none read from it ("<eos>" in a program's
    output stays characters, so an observation can never end the trajectory)."""
    if not text:
        return []
    try:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    except TypeError:  # a tokenizer without split_special_tokens
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def observation_ids(tokenizer, result: dict, config: ToolConfig) -> list[int]:
    """The observation of one call as token ids: the template around the output's first max_tool_output_tokens
    tokens."""
    prefix, suffix = config.observation_template.split("{output}")
    output = encode_plain(tokenizer, observation_text(result))[:config.max_tool_output_tokens]
    return encode_plain(tokenizer, prefix) + output + encode_plain(tokenizer, suffix)


def observation_spans(ids: list[int], tokenizer, config: ToolConfig | None = None) -> list[tuple[int, int]]:
    """[start, end) token positions of each observation in `ids` (a tokenized demonstration): from the template's
    text before {output} to the end of its text after it. SFT on demonstrations masks them out of the loss, as RL
    does (the model never predicts a tool's output)."""
    prefix, suffix = (encode_plain(tokenizer, part) for part in (config or ToolConfig()).observation_template
                      .split("{output}"))
    spans, i = [], 0
    while prefix and i <= len(ids) - len(prefix):
        if ids[i:i + len(prefix)] != prefix:
            i += 1
            continue
        j = i + len(prefix)
        while j <= len(ids) - len(suffix) and ids[j:j + len(suffix)] != suffix:
            j += 1
        end = min(len(ids), j + len(suffix))
        spans.append((i, end))
        i = end
    return spans


def run_tool_calls(calls: list[list[str]], config: ToolConfig) -> list[dict]:
    """Run each call (its cells: earlier ones for the session's state, then the new code) in the sandbox, in
    parallel: one {"output", "error", "timeout"} per call."""
    from rewards.python_tool import run_python_many

    chars = max(1024, 32 * config.max_tool_output_tokens)  # enough characters for the tokens that are kept
    return run_python_many(calls, timeout=float(config.tool_timeout), output_chars=chars)
