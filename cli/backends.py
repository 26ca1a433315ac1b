"""`tgs backends`: which kernel backends run here, and why any does not."""
import click


@click.command()
def backends():
    """List the kernel backends, the devices they serve and why any is unavailable."""
    from tinygrad_seq.backend import FAMILIES, available_backends, resolve

    for name, devices, reason in available_backends():
        status = "available" if reason is None else f"unavailable: {reason}"
        click.echo(f"{name:7s} [{', '.join(devices)}]  {status}")
    choices = ", ".join(f"{family}={resolve(family, 'cpu')}" for family in FAMILIES)
    click.echo(f"auto on cpu picks: {choices}")
