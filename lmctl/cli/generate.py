"""``lmctl generate``: sample text from a model, or fill masks; compare several models side by side.

Thin over :mod:`lmctl.workflows.generate`.  Output contract: plain stdout carries only the generated text
(or fill-mask candidates); statistics and warnings go to stderr, so a fixed ``--seed`` gives
byte-identical stdout.  torch/transformers are imported inside the command, never at module level.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lmctl.errors import UsageError, friendly_errors

if TYPE_CHECKING:  # pragma: no cover
    from lmctl.workflows.generate import GenerationSettings, LoadedModel, Result

HELP = """Sample text from a model, or fill masks; with several --model, compare them side by side.

Causal and permuted (XLNet) models continue each PROMPT; masked and ELECTRA models list the most
likely tokens for each [MASK] (or <mask>) in it.  A model trained by `lmctl train` needs no other
flag: its family comes from its config.json.  Settings not given come from the model's
generation_config.json, else lmctl's defaults (sampling, temperature 1, top-k 50, 50 new tokens).

Prompts come from PROMPT arguments, --prompts-file (one per line, or JSON lines with a "prompt"
field), or stdin when PROMPT is `-` (all of stdin is one prompt).  With no prompt on a terminal,
an interactive prompt loop starts (Ctrl-D leaves).

stdout holds only the generated text (one result after another, a blank line between results;
fill-mask: a table on a terminal, tab-separated lines otherwise); statistics go to stderr.
--json writes one JSON object per result instead.  Several --model: a side-by-side table on a
terminal, `==> MODEL <==` blocks otherwise.

Examples:

  lmctl generate --model out/ "ROMEO:" --seed 0 --max-new-tokens 50

  lmctl generate --model gpt2 --model out/ "The meaning of life is" --greedy

  lmctl generate --model out-mlm/ "Paris is the [MASK] of France." --top-k 5 --json
"""

_SAMPLING = "Sampling (causal and permuted models)"
_MODEL = "Model"
_OUTPUT = "Prompts and output"


def _seed_now() -> int:
    import random

    return random.SystemRandom().randrange(2**31)


def _settings_from_flags(**flags: Any) -> GenerationSettings:
    from lmctl.workflows.generate import GenerationSettings

    settings = GenerationSettings(**flags)
    settings.validate()
    return settings


def collect_prompts(prompts: Sequence[str], prompts_file: Path | None, stdin: Any = None) -> list[str]:
    """PROMPT arguments (``-`` = all of stdin as one prompt), then the prompts file's."""
    from lmctl.cli.prompts import read_prompts_file, read_stdin_prompt

    collected: list[str] = []
    for prompt in prompts:
        if prompt == "-":
            if str(prompts_file) == "-":
                raise UsageError("stdin cannot be both the prompt (-) and the --prompts-file (-); choose one")
            collected.append(read_stdin_prompt(stdin))
        else:
            collected.append(prompt)
    if prompts_file is not None:
        from_file = read_prompts_file(prompts_file, stream=stdin)
        if not from_file:
            raise UsageError(f"--prompts-file {prompts_file} holds no prompt (it is empty or blank)")
        collected.extend(from_file)
    return collected


# --- output ---------------------------------------------------------------------------------------


class Output:
    """Writes results: JSON lines, plain text, TSV or rich tables (tables only on a terminal).

    Results are written as they come when that keeps the format; a comparison of several models
    on a terminal is collected and shown as one table at the end.
    """

    def __init__(self, *, json_lines: bool, models: Sequence[str], stream: Any = None, include_prompt: bool = False):
        self.json_lines = json_lines
        self.include_prompt = include_prompt  # plain text: each result starts with its prompt
        self.streaming_prompt: str | None = None  # the one prompt being streamed (written before its text)
        self.models = list(models)
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.compare = len(self.models) > 1
        self.collected: list[Result] = []
        self.text_results = 0
        self.current_model: str | None = None
        self.streamed = False
        self.prompt_numbers: dict[str, int] = {}

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    # Streaming: a single prompt, single model, plain output.
    def on_text(self, piece: str) -> None:
        if not self.streamed and self.include_prompt and self.streaming_prompt is not None:
            self.write(self.streaming_prompt)
        self.streamed = True
        self.write(piece)

    def on_result(self, result: Result) -> None:
        from lmctl.workflows.generate import FillMaskResult

        if self.json_lines:
            self.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
            return
        if self.terminal and (self.compare or isinstance(result, FillMaskResult)):
            self.collected.append(result)  # shown as a table at the end
            return
        if isinstance(result, FillMaskResult):
            self._write_tsv(result)
            return
        if self.compare and result.model != self.current_model:
            if self.current_model is not None:
                self.write("\n")
            self.write(f"==> {result.model} <==\n")  # the convention of `head` with several files
            self.current_model = result.model
            self.text_results = 0
        if self.text_results:
            self.write("\n")  # a blank line between results
        if self.streamed:
            self.write("\n")  # the text itself is already out
            self.streamed = False
        else:
            self.write((result.prompt if self.include_prompt else "") + result.text + "\n")
        self.text_results += 1

    def _write_tsv(self, result: Any) -> None:
        number = self.prompt_numbers.get(result.model, 0) + 1
        self.prompt_numbers[result.model] = number
        prefix = f"{result.model}\t" if self.compare else ""
        for mask_number, candidates in enumerate(result.masks, start=1):
            for rank, candidate in enumerate(candidates, start=1):
                token = candidate.token.replace("\t", " ").replace("\n", " ")
                self.write(f"{prefix}{number}\t{mask_number}\t{rank}\t{token}\t{candidate.score:.4f}\n")

    def finish(self) -> None:
        if not self.collected:
            return
        from rich.console import Console

        console = Console(file=self.stream, highlight=False)
        for table in build_tables(self.collected, self.models):
            console.print(table)
        self.collected = []


def build_tables(results: Sequence[Result], models: Sequence[str]) -> list[Any]:
    """Rich tables for the terminal: texts side by side per model, or fill-mask candidates.

    Every piece of user or model text goes in as :class:`rich.text.Text`, never as markup.
    """
    from rich.table import Table
    from rich.text import Text

    from lmctl.workflows.generate import FillMaskResult

    by_model: dict[str, list[Result]] = {m: [] for m in models}
    for result in results:
        by_model.setdefault(result.model, []).append(result)
    columns = [m for m in by_model if by_model[m]]
    rows = list(zip(*(by_model[m] for m in columns), strict=True))
    tables = []
    if rows and isinstance(rows[0][0], FillMaskResult):
        for row in rows:
            table = Table(title=Text(row[0].prompt), title_justify="left", show_lines=False)
            table.add_column("mask", justify="right")
            table.add_column("#", justify="right")
            for model in columns:
                table.add_column(Text(f"{model}" if len(columns) > 1 else "token"))
                table.add_column("score", justify="right")
            masks = len(row[0].masks)
            for m in range(masks):
                depth = max(len(r.masks[m]) for r in row)
                for rank in range(depth):
                    cells: list[Any] = [str(m + 1) if rank == 0 else "", str(rank + 1)]
                    for r in row:
                        candidate = r.masks[m][rank] if rank < len(r.masks[m]) else None
                        cells += [Text(candidate.token), f"{candidate.score:.4f}"] if candidate else ["", ""]
                    table.add_row(*cells)
                if m + 1 < masks:
                    table.add_section()
            tables.append(table)
        return tables
    table = Table(show_lines=True)
    table.add_column("prompt", ratio=1)
    for model in columns:
        table.add_column(Text(model), ratio=2)
    for row in rows:
        prompt = Text(row[0].prompt)
        if any(r.index for r in row):
            prompt.append(f"  (sample {row[0].index + 1})", style="dim")
        table.add_row(prompt, *(Text(r.text) for r in row))
    tables.append(table)
    return tables


def _stats_line(
    name: str, results: Sequence[Result], seconds: float, load_seconds: float, seed: int | None
) -> str:
    from lmctl.workflows.generate import GenerationResult

    texts = [r for r in results if isinstance(r, GenerationResult)]
    if texts:
        tokens = sum(r.tokens for r in texts)
        reasons: dict[str, int] = {}
        for r in texts:
            reasons[r.finish_reason] = reasons.get(r.finish_reason, 0) + 1
        finish = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        line = (
            f"{name}: {len(texts)} result(s), {tokens} tokens in {seconds:.2f} s "
            f"({tokens / max(seconds, 1e-9):.1f} tokens/s; finish: {finish}); loaded in {load_seconds:.2f} s"
        )
        if seed is not None:
            line += f"; seed {seed}"
        return line
    return f"{name}: {len(results)} prompt(s) in {seconds:.2f} s; loaded in {load_seconds:.2f} s"


# --- the command ----------------------------------------------------------------------------------


@friendly_errors
def generate_command(
    prompts: list[str] = typer.Argument(
        None,
        metavar="PROMPT",
        help="Prompt text; `-` reads one prompt from stdin.  None on a terminal: interactive loop.",
        show_default=False,
    ),
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model directory or Hub id; repeat to compare models side by side.",
        rich_help_panel=_MODEL,
        show_default=False,
    ),
    prompts_file: Path = typer.Option(
        None,
        "--prompts-file",
        "-f",
        help='Prompts, one per line, or JSON lines with a "prompt" field (`-` = stdin).',
        rich_help_panel=_OUTPUT,
        show_default=False,
    ),
    max_new_tokens: int = typer.Option(
        None,
        "--max-new-tokens",
        "-n",
        help="Tokens to generate per result (default: the model's generation_config, else 50); "
        "past the model's context a sliding window keeps the latest tokens.",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    min_new_tokens: int = typer.Option(
        None,
        "--min-new-tokens",
        help="Do not end (EOS) before this many new tokens.",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    temperature: float = typer.Option(
        None,
        "--temperature",
        "-t",
        help="Sampling temperature (default 1.0; 0 means greedy).",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    top_k: int = typer.Option(
        None,
        "--top-k",
        "-k",
        help="Sample from the k most likely tokens (default 50, 0 = all).  Fill-mask: candidates per mask (default 5).",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    top_p: float = typer.Option(
        None,
        "--top-p",
        help="Nucleus sampling: the smallest set of tokens with this total probability (default 1.0).",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    repetition_penalty: float = typer.Option(
        None,
        "--repetition-penalty",
        help="Penalise tokens already present (1.0 = none; 1.2 is common).",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    num_return_sequences: int = typer.Option(
        1, "--num-return-sequences", help="Samples per prompt.", rich_help_panel=_SAMPLING
    ),
    greedy: bool = typer.Option(
        False,
        "--greedy",
        help="Always take the most likely token (deterministic, ignores sampling flags).",
        rich_help_panel=_SAMPLING,
    ),
    seed: int = typer.Option(
        None,
        "--seed",
        help="Random seed: the same seed gives the same output (default: a random one, shown on stderr).",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    stop: list[str] = typer.Option(
        None,
        "--stop",
        help="Stop a result at this string (not included in the output); repeatable.",
        rich_help_panel=_SAMPLING,
        show_default=False,
    ),
    batch_size: int = typer.Option(
        16,
        "--batch-size",
        "-b",
        help="Prompts generated together (left-padded) in one model call.",
        rich_help_panel=_OUTPUT,
    ),
    no_truncate: bool = typer.Option(
        False,
        "--no-truncate",
        help="Refuse a prompt that, with --max-new-tokens, exceeds the model's context (default: keep the "
        "prompt's end and slide a window over the text).",
        rich_help_panel=_OUTPUT,
    ),
    json_lines: bool = typer.Option(
        False,
        "--json",
        help="Write one JSON object per result (prompt, text, tokens, finish_reason, tokens_per_s, model).",
        rich_help_panel=_OUTPUT,
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No statistics on stderr.", rich_help_panel=_OUTPUT
    ),
    family: str = typer.Option(
        None,
        "--family",
        help="Family to use when config.json does not say (causal, masked, permuted, electra).",
        rich_help_panel=_MODEL,
        show_default=False,
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on a GPU that supports it, else fp32), fp32 or bf16.",
        rich_help_panel=_MODEL,
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_MODEL
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Never contact the Hugging Face Hub.", rich_help_panel=_MODEL
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Allow a Hub model's own Python code to run (only for models you trust).",
        rich_help_panel=_MODEL,
    ),
    checkpoint: str = typer.Option(
        None,
        "--checkpoint",
        metavar="latest|best|step-N",
        help="--model is a run directory: use this checkpoint of it (default: its final model, else its latest checkpoint).",
        rich_help_panel=_MODEL,
        show_default=False,
    ),
    include_prompt: bool = typer.Option(
        False,
        "--include-prompt",
        "--echo",
        help="Plain text output: write each prompt before its continuation (--json always has both).",
        rich_help_panel=_OUTPUT,
    ),
) -> None:
    from lmctl.cli.early_checks import resolve_models
    from lmctl.workflows.generate import GenerateConfig

    if not model:
        raise UsageError("pass --model DIR_OR_NAME (a directory written by lmctl train, or a Hub id)")
    model = resolve_models(list(model), checkpoint, offline=offline)
    chosen_seed = seed if seed is not None else _seed_now()
    settings = _settings_from_flags(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_return_sequences=num_return_sequences,
        greedy=greedy,
        seed=chosen_seed,
        stop=list(stop or []),
        batch_size=batch_size,
        truncate=not no_truncate,
    )
    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    config = GenerateConfig(
        models=list(model),
        settings=settings,
        family=family,
        trust_remote_code=trust_remote_code,
        precision=precision,
        device=device,
        offline=offline,
    )
    collected = collect_prompts(prompts or [], prompts_file)
    report = (lambda line: None) if quiet else _stderr_line
    if not collected:
        if not sys.stdin.isatty():
            raise UsageError(
                "no prompt given: pass PROMPT, --prompts-file FILE, or - to read the prompt from stdin"
            )
        interactive(config, json_lines=json_lines, report=report)
        return
    config.prompts = collected
    try:
        run(
            config,
            json_lines=json_lines,
            report=report,
            seed_shown=chosen_seed if seed is None else None,
            include_prompt=include_prompt,
        )
    except BrokenPipeError:
        # The reader went away (`lmctl generate ... | head`): stop quietly, as other filters do.
        # stdout is pointed at devnull so Python's exit-time flush does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(1) from None


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(
    config: Any,
    *,
    json_lines: bool,
    report: Callable[[str], None],
    stream: Any = None,
    seed_shown: int | None = None,
    warn: Callable[[str], None] | None = None,
    include_prompt: bool = False,
) -> None:
    """Generate for every model and write the results (one prompt streams as it is generated)."""
    from lmctl.cli.waiting import Waiting
    from lmctl.workflows.generate import generate

    output = Output(json_lines=json_lines, models=config.models, stream=stream, include_prompt=include_prompt)
    if len(config.prompts) == 1:
        output.streaming_prompt = config.prompts[0]
    # A spinner on stderr (terminals only, after 2 s) while torch and the model load; it goes
    # before anything is written.
    waiting = Waiting(f"loading {', '.join(config.models)}")

    def done(run: Any) -> None:
        waiting(None)
        report(
            _stats_line(
                run.name,
                run.results,
                run.seconds,
                run.load_seconds,
                seed_shown if run.kind == "text" else None,
            )
        )

    def on_text(piece: str) -> None:
        waiting(None)
        output.on_text(piece)

    def on_result(result: Any) -> None:
        waiting(None)
        output.on_result(result)

    with waiting:
        generate(
            config,
            on_text=None if json_lines else on_text,
            on_result=on_result,
            on_model_done=done,
            warn=lambda message: (waiting(None), (warn or _stderr_line)(f"warning: {message}")),
        )
    output.finish()


def interactive(
    config: Any,
    *,
    json_lines: bool,
    report: Callable[[str], None],
    read_line: Callable[[str], str] | None = None,
    stream: Any = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """The prompt loop: every model is loaded once; each line is a prompt; Ctrl-D (EOF) leaves.

    Returns the number of prompts answered.  ``read_line`` defaults to :func:`input` with readline
    history (kept in ``~/.lmctl_history`` when it can be written).
    """
    from lmctl.workflows.generate import ignored_settings, load_models, run_prompts

    tell = warn or _stderr_line  # warnings and errors: shown even with --quiet
    history = _enable_history() if read_line is None else None
    read = read_line or _read_prompt
    loaded_models: list[LoadedModel] = list(load_models(config))
    kind = loaded_models[0].kind  # load_models() refuses a mix of text and fill-mask models
    for flag in ignored_settings(config.settings, kind):
        tell(f"warning: {flag} does not apply to fill-mask models; ignored")
    hint = "end a prompt with Enter; Ctrl-D leaves" + (
        "; write [MASK] where a token should be predicted" if kind == "fill-mask" else ""
    )
    report(f"{', '.join(m.name for m in loaded_models)} ready: {hint}")
    answered = 0
    try:
        while True:
            try:
                prompt = read(">>> ")
            except EOFError:
                report("")
                break
            except KeyboardInterrupt:
                report("")
                continue
            if not prompt.strip():
                continue
            output = Output(json_lines=json_lines, models=[m.name for m in loaded_models], stream=stream)
            streaming = (
                len(loaded_models) == 1 and config.settings.num_return_sequences == 1 and not json_lines
            )
            try:
                for loaded in loaded_models:
                    run_prompts(
                        loaded,
                        [prompt],
                        config.settings,
                        on_text=output.on_text if streaming else None,
                        on_result=output.on_result,
                        warn=lambda message: tell(f"warning: {message}"),
                    )
            except KeyboardInterrupt:
                output.write("\n")
                tell("interrupted; next prompt")
                continue
            except Exception as exc:  # noqa: BLE001 - one bad prompt (no mask, too long) must not end the session
                from lmctl.errors import describe_exception

                message, _ = describe_exception(exc)
                tell(f"error: {message}")
                continue
            output.finish()
            answered += 1
    finally:
        if history is not None:
            history()
    return answered


def _read_prompt(prompt: str) -> str:
    """input(), but with stdout redirected the prompt goes to stderr: stdout keeps only results."""
    if sys.stdout.isatty():
        return input(prompt)
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return input()


def _enable_history() -> Callable[[], None] | None:
    """Arrow-key history for the prompt loop (readline), persisted across sessions when possible."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return None
    path = Path(os.environ.get("LMCTL_HISTORY_FILE", Path.home() / ".lmctl_history"))
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            readline.write_history_file(path)
        except OSError:
            pass

    return save
