import unittest

from textkit import word_count


class WordCountTest(unittest.TestCase):
    def test_counts_words_separated_by_any_whitespace(self) -> None:
        self.assertEqual(word_count("one two\tthree\n four"), 4)

    def test_an_empty_text_has_no_words(self) -> None:
        self.assertEqual(word_count(""), 0)
