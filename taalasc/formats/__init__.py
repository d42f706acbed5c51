"""GDSII and OASIS: record writers for the die writer, and readers for untrusted mask files."""
