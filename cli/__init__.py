"""The `tgs` command line (click)."""
