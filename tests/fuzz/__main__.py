"""`make fuzz`: coverage-guided fuzzing of `inspect()` with atheris (libFuzzer), or, where atheris
does not install, a mutation engine of our own over the same corpus and the same checks.

    python -m tests.fuzz [--engine auto|atheris|mutate] [--seconds N | --runs N] [--corpus DIR]

The corpus starts as the head and tail of every tool-made fixture (tests/fuzz/harness.py) and
grows in DIR (default .fuzz/corpus, kept between runs); an input that breaks a promise is saved
under .fuzz/crashes/ and the run exits 1. What one input is run as: tests/fuzz/harness.py.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".fuzz"
MAX_INPUT = 320 * 1024
MAX_RSS_MIB = 2048
BOUNDARIES = (
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    1 << 62,
    (1 << 64) - 1,
)


def prepare_corpus(corpus: Path) -> None:
    """Seed an empty corpus directory with every fixture's head and tail."""
    from tests.fuzz.harness import seed_bytes, seed_files

    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for path in seed_files():
        data = seed_bytes(path)
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)


def load_corpus(corpus: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(corpus.iterdir()) if path.is_file()]


def run_atheris(corpus: Path, seconds: int | None, runs: int | None) -> int:
    import atheris  # type: ignore[import-not-found]

    from tests.fuzz import harness  # instrumented by main(), before anything imported introspect

    others = load_corpus(corpus)[:64]

    def test_one_input(data: bytes) -> None:
        harness.run_one(data, others)

    arguments = [
        sys.argv[0],
        str(corpus),
        f"-rss_limit_mb={MAX_RSS_MIB}",
        "-timeout=10",
        f"-max_len={MAX_INPUT}",
        f"-artifact_prefix={DEFAULT_DIR / 'crashes'}/",
        "-print_final_stats=1",
    ]
    (DEFAULT_DIR / "crashes").mkdir(parents=True, exist_ok=True)
    arguments.append(f"-max_total_time={seconds}" if seconds else f"-runs={runs}")
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()
    return 0


def mutate(data: bytes, others: list[bytes], rng: random.Random) -> bytes:
    """One to six edits: boundary integers at aligned offsets, random bytes, a cut, a splice."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(5)
        if kind == 0 and len(out) >= 8:
            width, order = rng.choice([(2, "<"), (2, ">"), (4, "<"), (4, ">"), (8, "<"), (8, ">")])
            at = rng.randrange(0, min(len(out), 4096) - width + 1) & ~(width - 1)
            value = rng.choice(BOUNDARIES) & ((1 << (8 * width)) - 1)
            out[at : at + width] = struct.pack(order + {2: "H", 4: "I", 8: "Q"}[width], value)
        elif kind == 1 and out:
            at = rng.randrange(len(out))
            out[at : at + 8] = rng.randbytes(min(8, len(out) - at))
        elif kind == 2 and out:
            del out[rng.randrange(len(out)) :]
        elif kind == 3 and others:
            donor = rng.choice(others)
            at = rng.randrange(len(out) + 1)
            out[at:] = donor[rng.randrange(len(donor) + 1) :][: MAX_INPUT - at]
        else:
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(out[:MAX_INPUT])


def run_mutate(corpus: Path, seconds: int | None, runs: int | None, seed: int) -> int:
    from tests.fuzz.harness import FuzzFailure, run_one

    inputs = load_corpus(corpus)
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds if seconds else None
    done = 0
    while (runs is None or done < runs) and (deadline is None or time.monotonic() < deadline):
        data = mutate(rng.choice(inputs), inputs, rng)
        try:
            run_one(data, inputs)
        except FuzzFailure as failure:
            crashes = DEFAULT_DIR / "crashes"
            crashes.mkdir(parents=True, exist_ok=True)
            saved = crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
            saved.write_bytes(data)
            print(f"fuzz: {failure} (input saved as {saved})", file=sys.stderr)
            return 1
        done += 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"fuzz: {done} inputs ({4 * done} inspections), 0 failures, peak RSS {peak_mib} MiB")
    if peak_mib > MAX_RSS_MIB:
        print(f"fuzz: peak RSS {peak_mib} MiB is over {MAX_RSS_MIB} MiB", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DIR / "corpus")
    parser.add_argument("--seed", type=int, default=0, help="the mutate engine's random seed")
    args = parser.parse_args()
    if not args.seconds and not args.runs:
        parser.error("say how long: --seconds N or --runs N")
    engine = args.engine
    if engine in ("auto", "atheris"):
        try:
            import atheris  # type: ignore[import-not-found]
        except ImportError:
            if engine == "atheris":
                parser.error("atheris is not installed here: use --engine mutate")
            engine = "mutate"
        else:
            engine = "atheris"
            # coverage needs the library instrumented as it is first imported
            with atheris.instrument_imports(include=["introspect"]):
                import tests.fuzz.harness  # noqa: F401
    prepare_corpus(args.corpus)
    if engine == "atheris":
        return run_atheris(args.corpus, args.seconds, args.runs)
    return run_mutate(args.corpus, args.seconds, args.runs, args.seed)


if __name__ == "__main__":
    sys.exit(main())
