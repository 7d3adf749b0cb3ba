"""Model serving, read side only: the runtime model, the registry's reads, the aliases a function follows."""
