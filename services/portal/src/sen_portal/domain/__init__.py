"""The portal's own rules, no I/O."""
