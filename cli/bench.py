"""`tgs bench`: time every workload on every available backend beside PyTorch."""
import os
import subprocess
import sys

import click


@click.command()
@click.option("--workload", "-w", multiple=True,
              help="lstm_lm, gru_lm, rnn_lm, cnn, transformer, transformer_block (the same network, its blocks "
                   "written from public ops, timed beside tgs's TransformerLM), scalar_mlp (default: all).")
@click.option("--backend", "backends", multiple=True,
              help="Backends to time, repeated or comma-separated (default: every available one).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--no-torch", is_flag=True, help="Skip PyTorch (no ratio column).")
@click.option("--memory", is_flag=True, help="Also measure peak memory, each run in a fresh process.")
@click.option("--write-choice", is_flag=True,
              help="Store the fastest backend of each kernel family as `auto`'s choice on this device, in "
                   "$XDG_CONFIG_HOME/tinygrad_seq/auto_backend.json (default ~/.config/...).")
@click.option("--numpy-first", is_flag=True,
              help="Run in a fresh process that imports numpy before tinygrad_seq and makes none of the "
                   "`tgs` command's process settings: what a script or notebook gets.  One process per "
                   "backend, each with PyTorch beside it.")
@click.option("--profile", is_flag=True,
              help="Instead of the ratios: where each step's time goes, kernel call by kernel call "
                   "(ms and GFLOP/s), beside PyTorch's slowest ops.")
def bench(workload, backends, device, repeats, warmup, no_torch, memory, write_choice, numpy_first, profile):
    """Median ms per training step, and the ratio to PyTorch measured in the same run."""
    from tinygrad_seq import benchmark

    sizes = benchmark.CPU_SIZES if device == "cpu" else benchmark.GPU_SIZES
    unknown = [w for w in workload if w not in sizes]
    if unknown:
        raise click.BadParameter(f"unknown workload {unknown[0]!r}; choose from {', '.join(sizes)}",
                                 param_hint="--workload")
    from tinygrad_seq.backend import BACKENDS
    backends = [name.strip() for option in backends for name in option.split(",") if name.strip()]
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown:   # before any timing, not after PyTorch's first workload
        raise click.BadParameter(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}",
                                 param_hint="--backend")
    if numpy_first:
        if write_choice:
            raise click.UsageError("--write-choice compares the backends within one process; run it without "
                                   "--numpy-first (the tgs process keeps their thread pools from slowing each other)")
        options = ([f"--device={device}", f"--repeats={repeats}", f"--warmup={warmup}"]
                   + [flag for flag, on in (("--no-torch", no_torch), ("--memory", memory), ("--profile", profile)) if on])
        if profile:
            argv = [f"--workload={w}" for w in workload] + [f"--backend={b}" for b in backends] + options
            sys.exit(_in_a_library_users_process(argv))
        sys.exit(_each_backend_in_a_users_process(list(workload or sizes), backends or benchmark.runnable_backends(device),
                                                  options))
    with_torch = not no_torch
    if with_torch:
        try:
            import torch
            torch.set_num_threads(2 if device == "cpu" else torch.get_num_threads())
        except ImportError:
            click.echo("PyTorch is not installed (pip install tinygrad_seq[bench]); timing tinygrad_seq alone", err=True)
            with_torch = False
    if profile:
        _print_profiles(benchmark, sizes, workload or [w for w in sizes if w != "scalar_mlp"], backends,
                        device, warmup, repeats, with_torch)
        return
    results = benchmark.run(workload or None, backends or None, device, warmup, repeats, with_torch,
                            echo=lambda line: click.echo(line, err=True))
    click.echo(benchmark.format_table(results, device))
    if write_choice:
        from tinygrad_seq.backend import save_auto_choices, user_choice_table

        winners = benchmark.fastest_per_family(results)
        if not winners:
            raise click.ClickException("--write-choice needs at least one workload of a kernel family "
                                       "(lstm_lm, gru_lm, rnn_lm, cnn, transformer)")
        table = user_choice_table()
        try:
            save_auto_choices(device, winners, table)
        except OSError as exc:
            raise click.ClickException(f"could not write the choice table {table} ({exc.strerror or exc}); "
                                       "set XDG_CONFIG_HOME to a writable folder") from exc
        click.echo("auto now picks: " + ", ".join(f"{family}={name}" for family, name in sorted(winners.items()))
                   + f" (stored in {table})", err=True)
    if memory:
        click.echo("\n| workload | implementation | peak RSS MiB |\n| --- | --- | ---: |")
        for r in results:
            impl = "pytorch" if r.impl == "pytorch" else r.impl[4:-1] if r.impl.startswith("tgs[") else "auto"
            click.echo(f"| {r.workload} | {r.impl} | {benchmark.peak_memory_mb(r.workload, impl, device):.0f} |")


def _print_profiles(benchmark, sizes_table, workloads, backends, device, warmup, repeats, with_torch):
    """`tgs bench --profile`: one table per workload and backend, then PyTorch's."""
    backends = backends or [name for name in benchmark.runnable_backends(device) if name != "numpy"]
    click.echo(f"CPU: {benchmark.cpu_model()}; "
               f"{repeats} steps after {warmup} warm-ups, each part's total / steps")
    for workload in workloads:
        sizes = sizes_table[workload]
        for name in backends:
            rows = benchmark.kernel_profile(workload, sizes, name, device, warmup, repeats)
            step_ms = rows[-1][2]
            click.echo(f"\n{workload}, tgs[{name}]\n\n| part | calls/step | ms/step | share | GFLOP/s |\n"
                       "| --- | ---: | ---: | ---: | ---: |")
            for part, calls, ms, gflops in rows:
                click.echo(f"| {part} | {'' if calls is None else f'{calls:g}'} | {ms:.2f} | "
                           f"{ms / step_ms:.0%} | {'-' if gflops is None else f'{gflops:.0f}'} |")
        if with_torch:
            click.echo(f"\n{workload}, pytorch (self time of its slowest ops)\n\n"
                       "| op | calls/step | ms/step |\n| --- | ---: | ---: |")
            for op, calls, ms in benchmark.torch_profile(workload, sizes, device, warmup, repeats):
                click.echo(f"| {op} | {calls:g} | {ms:.2f} |")


def _each_backend_in_a_users_process(workloads, backends, options):
    """--numpy-first: one child process per backend (_in_a_library_users_process), each with
    PyTorch beside it.  A script uses one backend; two backends' thread pools in one process
    without the tgs command's settings slow each other and PyTorch (one such run: lstm_lm with
    the numba backend beside made PyTorch's step 158 ms instead of ~33, and the numpy backend's
    OpenBLAS pool made cython's 57 instead of ~30).  scalar_mlp, which has no backend, runs in
    the first child only.  Returns the worst exit status."""
    status = 0
    for i, name in enumerate(backends):
        mine = [w for w in workloads if i == 0 or w != "scalar_mlp"]
        if not mine:
            continue
        click.echo(f"numpy-first: backend {name}, in a process of its own", err=True)
        status = max(status, _in_a_library_users_process([f"--workload={w}" for w in mine]
                                                         + [f"--backend={name}"] + options))
    return status


def _in_a_library_users_process(argv):
    """Runs `tgs bench` with the options `argv` (this command's, less --numpy-first) in a child Python that
    imports numpy first and never calls tinygrad_seq.runtime.configure_for_speed(): the
    environment variables the `tgs` process set for itself are removed (the user's own kept),
    and the allocator is left alone.  Returns the child's exit status."""
    from tinygrad_seq.runtime import SET_HERE

    code = ("import numpy, os, sys\n"
            "from tinygrad_seq.cli.bench import bench\n"
            "print('numpy-first: a fresh process; numpy imported first; OPENBLAS_THREAD_TIMEOUT=' +\n"
            "      os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'), file=sys.stderr)\n"
            "bench.main(args=sys.argv[1:], prog_name='tgs bench')\n")
    env = {name: value for name, value in os.environ.items() if name not in SET_HERE}
    return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode
