-- Blind review (issue 22): people compare two adapters' suggestions for the same held-out
-- lines without knowing which is which. The server's logic is server/reviews.py, the SQL
-- feedback/review_rows.py. Code in review_tasks is scrubbed of secrets before it is stored.
CREATE TABLE reviews (
    id         VARCHAR PRIMARY KEY,  -- "rev-" + 12 hex characters
    name       VARCHAR NOT NULL,     -- e.g. "team-py@3 vs team-py@2"
    adapter_a  VARCHAR NOT NULL,     -- "base" for the base model
    adapter_b  VARCHAR NOT NULL,
    repo       VARCHAR,              -- where the tasks came from (free text)
    since      VARCHAR,
    created_at TIMESTAMP NOT NULL,
    status     VARCHAR NOT NULL      -- 'open' | 'closed'
);

CREATE TABLE review_tasks (
    review_id  VARCHAR NOT NULL,
    task_id    INTEGER NOT NULL,     -- 1..n in creation order
    path       VARCHAR NOT NULL,
    language   VARCHAR,
    commit_sha VARCHAR,
    line       INTEGER,
    prefix     VARCHAR NOT NULL,     -- the file before the cursor, as the editor sent it
    suffix     VARCHAR NOT NULL,     -- the file after the cursor
    expected   VARCHAR NOT NULL,     -- what the author wrote; shown to a reviewer only after their vote
    answer_a   VARCHAR NOT NULL,
    answer_b   VARCHAR NOT NULL,
    a_on_left  BOOLEAN NOT NULL,     -- drawn per task at creation (secrets module), never changes
    identical  BOOLEAN NOT NULL,     -- answers equal but for surrounding blanks: not shown, not voted on
    PRIMARY KEY (review_id, task_id)
);

-- One vote per reviewer and task. `choice` is the side, never the screen position: left and
-- right are the page's view, mapped through the task's a_on_left when the vote arrives.
CREATE TABLE review_votes (
    review_id VARCHAR NOT NULL,
    task_id   INTEGER NOT NULL,
    reviewer  VARCHAR NOT NULL,      -- the token's user with auth on, else the page's pseudonym
    choice    VARCHAR NOT NULL,      -- 'a' | 'b' | 'tie' | 'skip'
    voted_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (review_id, task_id, reviewer)
);
