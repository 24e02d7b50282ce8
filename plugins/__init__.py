"""Built-in components; each module registers its classes/functions on import."""
