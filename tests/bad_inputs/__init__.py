"""The bad-input corpus: files and options a user can get wrong, generated on demand (see :mod:`.corpus`)."""
