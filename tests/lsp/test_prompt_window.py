"""The prefix window: at most prefixChars long, and its start stays put while the user types."""
from lsp.completion import WINDOW_STEPS, prefix_start

LINES = "".join(f"line_{i:03d} = {i}\n" for i in range(300))  # 13 characters a line


def test_a_short_document_is_sent_whole():
    assert prefix_start(LINES, 500, 1000) == 0


def test_the_window_starts_at_a_line_and_holds_at_most_size_characters():
    for origin in range(1200, len(LINES), 37):
        start = prefix_start(LINES, origin, 1000)
        assert origin - 1000 <= start < origin
        assert LINES[start - 1] == "\n"
        # A quarter step plus one line is the most it gives up.
        assert origin - start >= 1000 - 1000 // WINDOW_STEPS - 13


def test_the_start_moves_only_every_step_characters_of_typing():
    starts = [prefix_start(LINES, origin, 1000) for origin in range(1000, len(LINES))]
    moves = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    typed = len(LINES) - 1000
    assert moves <= typed // (1000 // WINDOW_STEPS) + 1  # a move per step, not per keystroke
    assert starts == sorted(starts)


def test_one_long_line_is_cut_inside_it():
    line = "x" * 5000
    start = prefix_start(line, 4000, 1000)
    assert start % (1000 // WINDOW_STEPS) == 0 and 3000 <= start < 4000


def test_a_line_break_just_before_the_cursor_does_not_empty_the_window():
    text = "x" * 5000 + "\n" + "y = 1"
    origin = len(text)
    start = prefix_start(text, origin, 1000)
    assert origin - start >= 500 and start % (1000 // WINDOW_STEPS) == 0
