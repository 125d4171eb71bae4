"""Application shell: settings (`recoup.settings`), the `recoup` command line (`recoup.cli`), logging."""
