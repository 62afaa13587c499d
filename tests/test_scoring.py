"""The shared scorer on hand-written outputs: right, wrong, abstaining, unsupported number, no </thinking>."""

from __future__ import annotations

import doctest

import pytest

from thinksearch import scoring as sc


def test_module_doctests():
    result = doctest.testmod(sc)
    assert result.attempted > 10 and result.failed == 0


# ----------------------------------------------------------------------------- final answer


def test_final_answer_is_the_text_after_the_last_closing_tag():
    assert sc.final_answer("<thinking>\n先减80再打折\n</thinking>\n实付380元。") == "实付380元。"
    # An agent transcript: the answer follows the last round's thinking.
    two_rounds = ("<thinking>要查</thinking><tool_call>{\"name\": \"search\"}</tool_call>"
                  "<thinking>结果说是西班牙</thinking>\n2024年欧洲杯冠军是西班牙。")
    assert sc.final_answer(two_rounds) == "2024年欧洲杯冠军是西班牙。"
    assert sc.final_answer("<thinking>\n设边长为a，那么") is None  # never closed: no final answer
    assert sc.final_answer("答案是380") == "答案是380"  # never thinks (a base model): all of it is the answer
    assert sc.final_answer("<thinking>x</thinking>\n<tool_call>\n{}\n</tool_call>") == ""


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("raw, norm", [
    ("１２３ＡＢＣ", "123abc"),          # full width digits and letters
    ("1,000元 / 1，000元", "1000元/1000元"),  # ASCII and full-width thousands separators
    ("12,345,678", "12345678"),
    ("2024,2025", "2024,2025"),          # not a thousands separator: a list of years
    ("十四个", "14个"), ("二十", "20"), ("两场", "2场"), ("一百零五人", "105人"), ("三千二百元", "3200元"),
    ("星期三", "星期3"), ("第一名", "第1名"), ("两小时", "2小时"), ("三公里", "3公里"), ("两千克", "2千克"),
    ("两千元", "2000元"),
    ("一共", "一共"), ("统一", "统一"), ("千克", "千克"), ("万一", "万一"),  # words, not numbers
    ("1.5万人", "15000人"), ("134.9万亿元", "134900000000000元"),
    ("  Guido\tvan  Rossum ", "guidovanrossum"),
])
def test_normalize(raw, norm):
    assert sc.normalize(raw) == norm


# ----------------------------------------------------------------------------- gold matching


THINKING_ROW = {"type": "thinking", "question": "妈妈36岁，女儿8岁，再过几年妈妈的年龄正好是女儿的3倍？",
                "answers": ["6"], "match": "any"}


@pytest.mark.parametrize("output, right", [
    ("<thinking>\n36+x=3(8+x)，x=6\n</thinking>\n再过6年。", True),
    ("<thinking>\n设x年后\n</thinking>\n再过六年，妈妈42岁，女儿14岁。", True),  # Chinese numeral
    ("<thinking>\n36/8=4.5\n</thinking>\n再过4年。", False),                     # wrong
    ("<thinking>\n算一下\n</thinking>\n再过16年。", False),                      # 6 inside 16 is not 6
    ("<thinking>\n算一下\n</thinking>\n大约6.5年。", False),                     # nor inside 6.5
    ("<thinking>\n36+x=3(8+x)，x=6", False),                                     # no </thinking>
])
def test_thinking_answers_are_scored_on_the_final_answer_only(output, right):
    final = sc.final_answer(output)
    assert sc.matches_gold(final, THINKING_ROW["answers"], THINKING_ROW["match"]) is right


def test_the_thinking_text_does_not_count():
    # The right figure appears in the reasoning, but the final answer says something else.
    out = "<thinking>\n也许是6年\n</thinking>\n再过4年。"
    assert not sc.matches_gold(sc.final_answer(out), ["6"])


def test_match_all_needs_every_answer_and_any_needs_one():
    five = ["泰山", "华山", "衡山", "恒山", "嵩山"]
    assert sc.matches_gold("泰山、华山、衡山、恒山和嵩山", five, "all")
    assert not sc.matches_gold("泰山、华山、衡山、黄山和嵩山", five, "all")
    assert sc.matches_gold("星期三", ["周三", "星期三"], "any")
    assert sc.matches_gold("是周三。", ["星期三", "周三"], "any")
    assert not sc.matches_gold("", ["6"]) and not sc.matches_gold("6", [])
    with pytest.raises(ValueError, match="match must be one of any, all"):
        sc.matches_gold("6", ["6"], "some")


@pytest.mark.parametrize("final, gold, hit", [
    ("比例是8：12：15", "8:12:15", True),          # full-width colon
    ("共付 29.10 元", "29.1", True),               # same value, trailing zero
    ("约1,335万人", "1335万", True),
    ("报名人数为1335万人", "13350000", True),
    ("外汇储备约3.32万亿美元", "3.32万亿", True),
    ("外汇储备约3.2万亿美元", "3.32万亿", False),
    ("The answer is OBJECT", "object", True),
    ("打印 abababc", "abababc", True),
    ("结果是 [0, 3, 6, 9]", "[0, 3, 6, 9]", True),
    ("结果是[0,3,6]", "[0, 3, 6, 9]", False),
])
def test_answer_in_normalises_both_sides(final, gold, hit):
    assert sc.answer_in(final, gold) is hit


def test_key_fact_present_for_answerable_search_rows_only():
    row = {"type": "search", "question": "2024年欧洲杯冠军是哪支球队？", "answerable": True,
           "passages": ["c-0162"], "answers": ["西班牙"], "match": "any"}
    assert sc.key_fact_present("根据搜索结果，西班牙在决赛中2比1击败英格兰夺冠。", row) is True
    assert sc.key_fact_present("冠军是英格兰。", row) is False
    assert sc.key_fact_present(None, row) is False
    assert sc.key_fact_present("搜索结果中没有提到。", {"type": "search", "question": "q", "answerable": False}) is None


# ----------------------------------------------------------------------------- abstention

ABSTAINING = [
    "搜索结果中没有提到今天的金价。",
    "未找到相关信息。",
    "无法从结果中确定勇士队上一场的比分。",
    "抱歉，搜索结果里没有长春今晚的天气预报。",
    "检索到的资料并未提及招商银行美元现钞买入价。",
    "根据现有信息，我无法确定网易现任CEO是谁。",
    "这些结果只介绍了长春的气候概况，没有关于今晚是否下雪的具体数据。",
    "搜索结果没有给出铂金的价格，建议查询上海黄金交易所的实时行情。",
    "很遗憾，没能查到广州天河区二手房的挂牌均价。",
    "提供的资料中不包含南非兰特兑美元的汇率信息。",
    "暂无相关数据。",
    "结果里找不到颐和园的开门时间，请以官方公告为准。",
    "The search results do not mention the current WTI price.",
    "I couldn't find any information about this in the results.",
    "The results contain no information about the exchange rate today.",
    "Unable to determine the score from the provided sources.",
    "I don't have data on today's air quality in Ningbo.",
    "There is no mention of the release date in the snippets.",
    "资料里未说明具体日期。",
]

ANSWERING = [
    "2024年欧洲杯冠军是西班牙，决赛2比1击败英格兰。",
    "根据搜索结果，国际金价在2025年4月22日一度接近每盎司3500美元。",
    "马龙没有退役，他在巴黎奥运会上获得了个人第6枚奥运金牌。",
    "港元与美元挂钩，汇率维持在7.75至7.85之间，没有大的变化。",
    "去新加坡不需要签证，中新互免签证，每次停留不超过30天。",
    "2025年元旦放假1天，不调休。",
    "英国外交大臣由首相任命，这个职位没有固定任期。",
    "截至2025年10月，日本首相是高市早苗。",
    "人民币汇率今天没有大幅波动，美元兑人民币约7.1。",
    "这个问题的答案是：上海港连续15年位居全球第一。",
    "比特币价格没有上限，但总量上限为2100万枚。",
    "The 2024 Euro final was won by Spain, who beat England 2-1.",
    "Gold hit a record near $3,500 per ounce in April 2025.",
    "No, Ma Long has not retired; he won his sixth Olympic gold in Paris.",
    "The exchange rate is not fixed: it floats within a band around the central parity.",
    "The results show Python 3.14 was released on October 7, 2025.",
    "这次判罚没有改变比赛结果。",            # negation, but about the world, not the results
    "该政策没有具体的截止日期，长期有效。",
    "There is no doubt Spain won.",
]


def test_abstention_phrasings_are_enough_to_mean_something():
    assert len(ABSTAINING) >= 15 and len(ANSWERING) >= 15
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in p) for p in ABSTAINING) >= 8  # Chinese and English both
    assert sum(p.isascii() for p in ANSWERING) >= 4


@pytest.mark.parametrize("text", ABSTAINING)
def test_abstains_on_saying_the_results_lack_it(text):
    assert sc.abstains(text)


@pytest.mark.parametrize("text", ANSWERING)
def test_does_not_abstain_on_an_answer(text):
    assert not sc.abstains(text)


def test_no_final_answer_is_no_abstention():
    assert not sc.abstains(None) and not sc.abstains("")


# ----------------------------------------------------------------------------- unsupported numbers

RESULTS = ("[1] 国际金价2025年4月创历史新高（每盎司接近3500美元）\n"
           "截至2025年4月下旬，伦敦现货黄金价格在4月22日盘中一度接近每盎司3,500美元。")


def test_numbers_copied_from_results_or_question_are_supported():
    s = sc.unsupported_numbers("根据[1]，2025年4月22日金价接近每盎司三千五百美元。", "2025年4月金价最高到多少？", RESULTS)
    assert s.found == ("2025", "4", "22", "3500") and s.unsupported == () and s.share == 0.0


def test_an_invented_figure_is_unsupported_and_counted_per_mention():
    s = sc.unsupported_numbers("金价约3480美元，比上月涨了8%；4月22日接近3500美元，约3480美元。",
                               "2025年4月金价最高到多少？", RESULTS)
    assert s.found == ("3480", "8", "4", "22", "3500", "3480")
    assert s.unsupported == ("3480", "8", "3480") and s.share == 0.5


def test_citation_and_list_markers_are_not_figures():
    answer = "1. 金价接近3500美元[1]\n2) 时间是4月22日【1】\n（3）数据截至2025年"
    s = sc.unsupported_numbers(answer, "金价多少？", RESULTS)
    assert s.found == ("3500", "4", "22", "2025") and s.unsupported == ()


def test_an_answer_without_numbers_has_no_share():
    s = sc.unsupported_numbers("搜索结果里没有今天的金价。", "今天金价多少？", RESULTS)
    assert s.found == () and s.share is None


def test_results_can_be_a_list_and_answering_without_search_is_scored_too():
    # A search question answered from memory: no results, so every figure not in the question is unsupported.
    s = sc.unsupported_numbers("1美元约兑7.8港币。", "1美元可以换多少港币？", [])
    assert s.unsupported == ("7.8",)
    s = sc.unsupported_numbers("在7.75到7.85之间。", "1美元可以换多少港币？", ["港元汇率维持在7.75至7.85之间"])
    assert s.unsupported == ()


def test_a_numeric_gold_counts_only_in_the_conclusion():
    """A worked answer passes through many numbers; only where it ends counts (a real base-model reply)."""
    worked = ("卖出一半苹果后，箱子的重量是 \\( \\frac{25}{2} = 12.5 \\) 千克。箱子本身重量是 \\( 25 - 12.5 = 12.5 \\) 千克。"
              "箱子本身多重是 \\( 12.5 \\times 12.5 = 156.25 \\) 千克。")
    assert not sc.matches_gold(worked, ["2"])
    assert sc.matches_gold(worked + "答：箱子重2千克。", ["2"])
    assert sc.matches_gold(worked, ["2"], anywhere=True)  # passages are searched whole


def test_a_worked_answer_cut_off_at_a_list_number_does_not_match_that_number():
    # The base model's reply in a quickstart run: cut off at step 6, gold 6; it had said 7.
    cut = "2. **确定最小球数**：\n   9 - 2 = 7\n\n5. **分析摸球结果**：如果摸出7个球，我们有：\n   - 7个黑球\n\n6."
    assert not sc.matches_gold(cut, ["6"])
    assert sc.matches_gold(cut.replace("\n\n6.", "\n\n所以至少摸出6个。"), ["6"])


@pytest.mark.parametrize("final, gold, hit", [
    ("诈骗不可能。", ["诈骗", "骗局"], False),             # the gold word, denied (a kept synth row, gold_hint run)
    ("这不是骗局，可以放心。", ["骗局"], False),
    ("光年并非时间单位，而是长度单位。", ["长度单位"], True),  # the denial is of another term
    ("这很可能是骗局：正规抽奖不收手续费。", ["骗局"], True),
    ("不确定，但多半是骗局。", ["骗局"], True),             # a negation further away does not count
    ("它不是骗局吗？当然是骗局。", ["骗局"], True),          # one affirmed mention is enough
])
def test_a_denied_gold_word_is_not_the_answer(final, gold, hit):
    assert sc.matches_gold(final, gold) is hit


def test_a_two_part_gold_needs_both_parts():
    # Pool row pool-think-arithmetic-22: the root, and that -144 has none among the reals.
    gold = ["12", "没有"]
    assert not sc.matches_gold("144的平方根是12。是的，负144在实数范围内有平方根。", gold, "all")
    assert sc.matches_gold("负144在实数范围内没有平方根；144的平方根是12。", gold, "all")


def test_a_number_the_answer_only_repeats_from_the_question_is_not_its_answer():
    q = "用6、7、8三个数字组成没有重复数字的三位数，一共能组成几个？最大的是哪个？"
    wrong = "用6、7、8三个数字组成没有重复数字的三位数，一共能组成20个。最大的是876。"  # a kept synth row
    assert sc.matches_gold(wrong, ["6", "876"], "all")  # the question's own 6 counted without it
    assert not sc.matches_gold(wrong, ["6", "876"], "all", question=q)
    assert sc.matches_gold("一共能组成6个，最大的是876。", ["6", "876"], "all", question=q)


def test_only_whole_echoed_clauses_are_left_out():
    q = '这段代码错在哪里：with open("a.txt") as f: data = f.read; print(len(data))'
    assert sc.matches_gold("应写成 data = f.read()，少了括号。", ["read()"], question=q)
    assert sc.without_echo("短句是，答案", "短句是") == "短句是，答案"  # under min_chars: kept


def test_a_gold_the_question_holds_counts_only_outside_its_restatement():
    q = "用6、7、8三个数字组成没有重复数字的三位数，一共能组成几个？最大的是哪个？"
    # Kept as verified by the synth gate before: the restatement drops "用", so it is no whole clause.
    restated = "6、7、8三个数字组成没有重复数字的三位数，一共能组成216个。最大的是876。"
    assert not sc.matches_gold(restated, ["6", "876"], "all", question=q)
    assert sc.matches_gold("6、7、8三个数字组成没有重复数字的三位数，一共能组成6个。最大的是876。",
                           ["6", "876"], "all", question=q)
    # A gold the question does not hold is matched as before, even inside a copied stretch.
    q2 = '这段代码错在哪里：with open("a.txt") as f: data = f.read; print(len(data))'
    assert sc.matches_gold("with open(\"a.txt\") as f: data = f.read()，少了括号。", ["read()"], question=q2)


def _gold(rid: str) -> dict:
    from pathlib import Path

    from thinksearch.gold import load_gold

    root = Path(__file__).resolve().parents[1]
    rows = load_gold(root / "data/eval/test.jsonl", corpus=None) + load_gold(root / "data/questions/thinking.jsonl", corpus=None)
    return next(r for r in rows if r["id"] == rid)


@pytest.mark.parametrize("rid, final, right", [
    ("think-everyday-11", "A店：800×0.75=600元；B店：800-150=650元。所以选A店。", True),
    # Naming both shops passed before the gold listed B店 as wrong.
    ("think-everyday-11", "选A店或者选B店都可以，A店更便宜一些。", False),
    ("think-everyday-11", "A店600元，不是B店更便宜，选A店。", True),
    ("think-logic-03", "不能推出，因为凋谢的花不一定是玫瑰。", True),
    ("think-logic-03", "可以推出有些玫瑰很快凋谢，不能否认。", False),
    # The question holds the wrong option ("光年是时间单位还是长度单位"): its restatement is no answer.
    ("pool-think-science-58", "光年是时间单位还是长度单位？光年是长度单位，指光一年走的距离。", True),
    ("pool-think-science-58", "光年是时间单位，也可以说光年是长度单位。", False),
    ("pool-think-arithmetic-23", "100×1.1×0.9=99，比原价低了1元。", True),
    ("pool-think-arithmetic-23", "价格不变，比原价低一点点。", False),
])
def test_an_answer_that_affirms_a_wrong_option_is_not_right(rid, final, right):
    g = _gold(rid)
    assert sc.matches_gold(final, g["answers"], g["match"], question=g["question"], wrong=g.get("wrong", ())) is right
