"""Process-wide state, each piece in a small leaf module that imports nothing above it.

``registry`` (the runs this process is training), ``memory`` (giving memory back, out-of-memory advice, the
one-model slot), ``environment`` (what a run records about the machine), ``output`` (routing a training
thread's prints to the cell that launched it), ``imports`` (finishing imports another thread may be doing).
They sit just above ``config`` so that the store, the engine, evaluation and the views can all share them
without any of them importing the engine.
"""
