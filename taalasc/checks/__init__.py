"""Our own rule check of the custom layers (the PDKs' decks are run by sign-off)."""
