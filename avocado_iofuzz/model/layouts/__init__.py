"""Scratch layouts that only bring-up recipes name: exact device structures, one module per layout."""
