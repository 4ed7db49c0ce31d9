import unittest

from textkit import slugify, word_count


class WordCountTest(unittest.TestCase):
    def test_counts_words_separated_by_any_whitespace(self) -> None:
        self.assertEqual(word_count("one two\tthree\n four"), 4)

    def test_an_empty_text_has_no_words(self) -> None:
        self.assertEqual(word_count(""), 0)


class SlugifyTest(unittest.TestCase):
    def test_accents_and_punctuation(self) -> None:
        self.assertEqual(slugify("Héllo, World!"), "hello-world")

    def test_another_separator(self) -> None:
        self.assertEqual(slugify("Team Executor demo", separator="_"), "team_executor_demo")

    def test_nothing_left_is_an_empty_slug(self) -> None:
        self.assertEqual(slugify("?!"), "")

    def test_max_length_cuts_at_a_separator(self) -> None:
        self.assertEqual(slugify("A rather long title", max_length=10), "a-rather")

    def test_max_length_cuts_a_single_long_word(self) -> None:
        self.assertEqual(slugify("Supercalifragilistic", max_length=5), "super")
