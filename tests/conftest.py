# The test process is tinygrad_seq's own, so it takes the settings `tgs` takes (before anything
# imports numpy: OpenBLAS reads its spin time only when it loads).  Subprocesses inherit the
# environment variables; tests of what `import tinygrad_seq` does remove them.
import tinygrad_seq.runtime

tinygrad_seq.runtime.configure_for_speed()
