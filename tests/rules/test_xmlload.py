from __future__ import annotations

from trailwarden.rules.xmlload import parse_wazuh_xml


def test_several_roots_and_line_numbers() -> None:
    doc = parse_wazuh_xml('<var name="XY">a|b</var>\n<group name="g">\n  <rule id="1">\n'
                          "    <match>$XY</match>\n  </rule>\n</group>\n<group name=\"h\"/>\n",
                          "f.xml")
    assert not doc.problems
    assert [r.tag for r in doc.roots] == ["group", "group"]
    rule = doc.roots[0].children[0]
    assert rule.line == 3
    assert rule.children[0].line == 4
    assert rule.children[0].text == "a|b"


def test_bare_lt_and_amp_are_pattern_text() -> None:
    doc = parse_wazuh_xml("<decoder name=\"d\"><prematch>^<(\\d+)> a&b &lt;</prematch></decoder>",
                          "d.xml")
    assert not doc.problems
    assert doc.roots[0].children[0].text == "^<(\\d+)> a&b &lt;"


def test_escaped_lt_is_text_but_escaped_backslash_is_not() -> None:
    doc = parse_wazuh_xml("<d name=\"x\"><p>\\<log>\\.+\\</log></p><q>E:\\\\</q></d>", "d.xml")
    assert not doc.problems
    assert doc.roots[0].children[0].text == "\\<log>\\.+\\</log>"
    assert doc.roots[0].children[1].text == "E:\\\\"


def test_comments_may_hold_double_dashes() -> None:
    doc = parse_wazuh_xml("<!-- a -- b --><g name=\"x\"><!--\n--><r/></g>", "f.xml")
    assert not doc.problems
    assert [c.tag for c in doc.roots[0].children] == ["r"]


def test_content_is_kept_verbatim_and_self_closing_is_empty() -> None:
    doc = parse_wazuh_xml("<r><match> spaced </match><same_source_ip/></r>", "f.xml")
    match, same = doc.roots[0].children
    assert match.text == " spaced "
    assert same.text == ""


def test_mismatched_close_reports_both_lines() -> None:
    doc = parse_wazuh_xml("<group name=\"g\">\n<rule id=\"1\">\n</group>\n", "bad.xml")
    assert [str(p) for p in doc.problems] == [
        "bad.xml:3: error: element <rule> (line 2) closed by </group>"
    ]


def test_unclosed_element_and_comment() -> None:
    assert "bad.xml:2: error: element <rule> is not closed" in [
        str(p) for p in parse_wazuh_xml("<g>\n<rule>\n</g>", "bad.xml").problems
    ] or parse_wazuh_xml("<g>\n<rule>\n", "bad.xml").problems
    doc = parse_wazuh_xml("<g>\n<r>\n", "bad.xml")
    assert {str(p) for p in doc.problems} == {
        "bad.xml:1: error: element <g> is not closed",
        "bad.xml:2: error: element <r> is not closed",
    }
    assert [str(p) for p in parse_wazuh_xml("<!-- open", "c.xml").problems] == [
        "c.xml:1: error: comment not closed"
    ]


def test_variables_are_substituted_only_in_files_that_define_them() -> None:
    doc = parse_wazuh_xml('<var name="bad_words">core|fail</var><g><m>$BAD_WORDS, x$</m>'
                          "<d>$(field) kept</d></g>", "f.xml")
    assert not doc.problems
    m, d = doc.roots[0].children
    assert m.text == "core|fail, x$"
    assert d.text == "$(field) kept"
    plain = parse_wazuh_xml("<g><m>$NOT_A_VAR</m></g>", "f.xml")
    assert plain.roots[0].children[0].text == "$NOT_A_VAR"


def test_unknown_variable_is_an_error_with_the_line() -> None:
    doc = parse_wazuh_xml('<var name="A">x</var>\n<g>\n<m>$BB</m></g>', "f.xml")
    assert [str(p) for p in doc.problems] == ["f.xml:3: error: unknown variable $BB"]
