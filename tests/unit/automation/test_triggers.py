"""Trigger matching: word-aware, case/diacritic-insensitive, Cyrillic, phrases, prefixes."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vibee.automation.triggers import compile_triggers, find_trigger, normalize, trigger_words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World", "hello, world"),
        ("Café", "cafe"),
        ("CAFÉ", "cafe"),
        ("Cafe\u0301", "cafe"),  # decomposed é
        ("Ｃａｆé", "cafe"),  # fullwidth
        ("naïve façade", "naive facade"),
        ("Straße", "strasse"),
        ("İstanbul", "istanbul"),
        ("ﬁne", "fine"),
        ("ℌello", "hello"),
        ("Бот", "бот"),
        ("ЁЛКА ёжик", "елка ежик"),
        ("е\u0308лка", "елка"),  # decomposed ё
        ("Йогурт мой", "йогурт мой"),  # й stays й
        ("и\u0306од", "йод"),  # decomposed й becomes й, not и
        ("Київ", "київ"),  # ї stays ї
        ("Ўсё", "ўсе"),  # Belarusian ў stays
        ("замо́к", "замок"),  # a stress mark is not a letter
        ("всѐ ѝ", "все и"),  # nor a grave one
        ("ℌ𝐞𝐥𝐥𝐨", "hello"),  # letter-like and mathematical forms
        ("нужен 🤖 бот!", "нужен 🤖 бот!"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@given(st.text())
@example("ℌ")
@example("Ё\u0301")
@example("İ")
@example("ǅ")
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_normalize_drops_every_combining_mark_outside_cyrillic_letters(text: str) -> None:
    for char in normalize(text):
        if unicodedata.combining(char):
            pytest.fail(f"combining mark {char!r} left in {normalize(text)!r}")


@pytest.mark.parametrize(
    ("text", "triggers", "expected"),
    [
        # the original bug: a substring match
        ("Ищу работу", ["бот"], None),
        ("работа", ["бот"], None),
        ("Нужен бот", ["бот"], "бот"),
        ("нужен Бот!", ["бот"], "бот"),
        ("НУЖЕН БОТ", ["Бот"], "Бот"),
        ("#бот", ["бот"], "бот"),
        ("нужен🤖бот🔥срочно", ["бот"], "бот"),
        ("«бот»", ["бот"], "бот"),
        # word forms: exact unless the trigger says prefix
        ("с ботом", ["бот"], None),
        ("с ботом", ["бот*"], "бот*"),
        ("боты", ["бот*"], "бот*"),
        ("бот", ["бот*"], "бот*"),
        ("работа", ["бот*"], None),
        ("куплю квартиру", ["купл* квартир*"], "купл* квартир*"),
        ("купила квартиры", ["купл* квартир*"], None),
        # ё / й
        ("Ищу ёлку", ["елку"], "елку"),
        ("ищу елку", ["ЁЛКУ"], "ЁЛКУ"),
        ("мой дом", ["мои"], None),
        ("мои дом", ["мой"], None),
        # diacritics, width, case
        ("Meet at the CAFÉ", ["cafe"], "cafe"),
        ("meet at the cafe", ["Café"], "Café"),
        ("ＢＯＴ here", ["bot"], "bot"),
        ("Straße", ["strasse"], "strasse"),
        # phrases
        ("I WANT   to buy!", ["want to buy"], "want to buy"),
        ("want,to...buy", ["want to buy"], "want to buy"),
        ("want to\nbuy", ["want to buy"], "want to buy"),
        ("want 🛒 to buy", ["want to buy"], "want to buy"),
        ("wanted to buy", ["want to buy"], None),
        ("want to buyer", ["want to buy"], None),
        ("want to sell", ["want to buy"], None),
        ("Хочу   КУПИТЬ!!!", ["хочу купить"], "хочу купить"),
        # word characters glue: letters, digits, underscore
        ("@bot_father", ["bot"], None),
        ("bot2", ["bot"], None),
        ("2 bots", ["bot*"], "bot*"),
        ("e-mail me", ["e-mail"], "e-mail"),
        ("e mail me", ["e-mail"], "e-mail"),
        ("iPhone 15 for sale", ["iphone 15"], "iphone 15"),
        ("iPhone 150", ["iphone 15"], None),
        # several triggers: leftmost in the text, then the longest phrase
        ("need a car and a bot", ["bot", "car"], "car"),
        ("хочу купить", ["купить", "хочу купить", "хочу"], "хочу купить"),
        ("Бот", ["Бот", "бот"], "Бот"),
        # nothing configured
        ("бот", [], None),
    ],
)
def test_find_trigger(text: str, triggers: list[str], expected: str | None) -> None:
    assert find_trigger(text, triggers) == expected
    assert find_trigger(text, tuple(triggers)) == expected


@pytest.mark.parametrize("trigger", ["", "   ", "!!!", "🔥", "*", "*бот", "бо*т"])
def test_invalid_triggers_are_rejected(trigger: str) -> None:
    with pytest.raises(ValueError):
        trigger_words(trigger)
    with pytest.raises(ValueError):
        compile_triggers(("ok", trigger))


def test_trigger_words() -> None:
    assert trigger_words("  Хочу, КУПИТЬ  ") == ("хочу", "купить")
    assert trigger_words("купл* квартир*") == ("купл*", "квартир*")
    assert trigger_words("e-mail") == ("e", "mail")


def test_matchers_are_cached_per_tuple() -> None:
    triggers = ("бот", "want to buy")
    assert compile_triggers(triggers) is compile_triggers(tuple(list(triggers)))
    assert compile_triggers(triggers).search_normalized(normalize("Нужен БОТ")) == "бот"


# --- properties -----------------------------------------------------------------------------


def _stays_one_word(char: str) -> bool:
    return re.fullmatch(r"[^\W\d_]+", normalize(char)) is not None


# Letters (Latin, Cyrillic, Greek, CJK, …) that are still letters after normalisation.
letters = st.characters(categories=("Lu", "Ll", "Lo")).filter(_stays_one_word)
words = st.text(letters, min_size=1, max_size=12)
separators = st.lists(
    st.sampled_from([" ", "  ", "\n", "\t", ",", "!", "?", "…", "«", "»", "—", "🤖", "🔥", "👍🏽"]),
    min_size=1,
    max_size=3,
).map("".join)


@given(
    trigger=st.lists(words, min_size=1, max_size=3).map(" ".join),
    before=st.text(),
    after=st.text(),
    left=separators,
    right=separators,
)
@example(trigger="бот", before="нужен", after="срочно", left="🤖", right="!")
def test_a_trigger_standing_as_whole_words_is_found(
    trigger: str, before: str, after: str, left: str, right: str
) -> None:
    text = before + left + trigger + right + after
    assert find_trigger(text, [trigger]) == trigger
    assert find_trigger(text.replace(" ", " \t "), [trigger]) == trigger


@given(trigger=words, prefix=st.text(letters, max_size=5), suffix=st.text(letters, max_size=5))
@example(trigger="бот", prefix="ра", suffix="а")
@example(trigger="cafe", prefix="", suffix="s")
def test_a_trigger_glued_inside_a_longer_word_is_not_found(
    trigger: str, prefix: str, suffix: str
) -> None:
    if not prefix and not suffix:
        suffix = "a"
    assert find_trigger(prefix + trigger + suffix, [trigger]) is None


@given(trigger=words, before=st.text(), after=st.text())
def test_case_and_diacritics_do_not_matter(trigger: str, before: str, after: str) -> None:
    decorated = unicodedata.normalize("NFD", trigger.upper())
    if normalize(decorated) != normalize(trigger):
        return  # e.g. "ŉ".upper() is two words; not what this property is about
    assert find_trigger(f"{before} {decorated} {after}", [trigger]) == trigger
