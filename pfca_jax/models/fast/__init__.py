"""The fast layer: everything in the networks that exists for speed, apart from the definitions.

Chosen with `models.create(..., attention_impl='fast')` (the default); layers.py lists what it
changes. Code that differs by platform asks platform.py, once per compiled program.
"""
