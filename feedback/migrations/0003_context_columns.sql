-- Repository context (issue: snippets from other files in the prompt). How many snippets and
-- prompt tokens went into each completion, so that acceptance with and without context can
-- be compared (`codeloop stats --by context`). NULL on rows from before: no context then.
ALTER TABLE completions ADD COLUMN context_snippets INTEGER;
ALTER TABLE completions ADD COLUMN context_tokens INTEGER;
ALTER TABLE completion_outcomes ADD COLUMN context_snippets INTEGER;
