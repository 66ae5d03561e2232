from sen_shared.fhir.search.text import normalize, prefix_tokens, query_tokens


def test_vietnamese_normalization():
    assert normalize("Nguyễn") == "nguyen"
    assert normalize("Đặng") == "dang"
    assert normalize("đặng") == "dang"
    assert normalize("Cao Lãnh") == "cao lanh"
    assert normalize("  Trần   Thị\tHồng ") == "tran thi hong"
    assert normalize("Huỳnh Ưng Ơn") == "huynh ung on"


def test_prefix_tokens_are_word_prefixes_capped():
    toks = prefix_tokens("cao lanh")
    assert {"c", "ca", "cao", "l", "la", "lan", "lanh"} == toks
    long = prefix_tokens("a" * 30)
    assert max(len(t) for t in long) == 20


def test_query_tokens_truncate_to_stored_length():
    assert query_tokens("nguyen van") == ["nguyen", "van"]
    assert query_tokens("b" * 25) == ["b" * 20]
