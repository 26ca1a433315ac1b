"""`tgs backends`: which kernel backends run here, and why any does not."""
import click


@click.command()
def backends():
    """List the kernel backends, the devices they serve and why any is unavailable."""
    from tinygrad_seq.backend import FAMILIES, available_backends, resolve

    for name, devices, reason in available_backends():
        status = "available" if reason is None else f"unavailable: {reason}"
        click.echo(f"{name:7s} [{', '.join(devices)}]  {status}")
    if dict((name, reason) for name, _, reason in available_backends()).get("cython", "") is None:
        from tinygrad_seq.kernels.cython import variant
        chosen, why = variant()
        click.echo(f"cython variant: {chosen or 'unversioned build'} ({why})")
    choices = ", ".join(f"{family}={resolve(family, 'cpu')}" for family in FAMILIES)
    click.echo(f"auto on cpu picks: {choices}")
