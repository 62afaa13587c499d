"""Text that code writes into search rows: the template reasoning and the abstaining answer.

Both stand in where the teacher's text cannot be used, so both must be specific to the row:

- :func:`template_reasoning`: the thinking of a search row whose teacher gave no usable reason
  (``search_reason_fallback``). It opens with the query and names what changes for the
  question's category (a price moves daily, an office holder changes at elections …), in one of
  a few wordings picked by the row's seed, so no single sentence fits every question and the
  student does not learn one stock phrase as "the reason to search" (issue 19). A
  stable-knowledge question the student got wrong when probed gets a reason that says what
  kind of question it is (a fact to recall, not something to derive) and ends with the query.
- :func:`abstention`: the answer of a search row none of whose results concerns the question
  (:mod:`.relevance`). It names what was searched and what is missing, and never quotes a
  passage about something else as if it answered.
- :func:`with_opening`: the fixed opening of a grounded answer (``synth.answer_opening``), so
  the choice between answering and abstaining is made at one token, not spread over the
  teacher's many openings against the abstention's single one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.search.base import Result

# What changes, per category of data/questions/search.jsonl; "{q}" is the query.
TEMPLATE_REASONS: dict[str | None, tuple[str, ...]] = {
    "prices": ("{q}：价格随市场每天涨跌，我记得的数字多半已经过时，需要搜索最新报价。",
               "{q}：行情一直在波动，凭记忆给出的价格不可靠，要查一下现在的报价。",
               "{q}：报价会随供求和市场变化，我需要搜索最近的价格数据再回答。"),
    "exchange_rates": ("{q}：汇率每个交易日都在变，我记得的比价可能已经过时，需要搜索最新汇率。",
                       "{q}：货币之间的比价随市场浮动，要查询当前的汇率才能换算。",
                       "{q}：汇率受市场和政策影响变化很快，我需要搜索最新的中间价或报价。"),
    "weather": ("{q}：天气每天都不一样，我没有实时的气象数据，需要搜索最新的天气预报。",
                "{q}：气温、降水和空气质量随时在变，要查一下当地最新的观测和预报。",
                "{q}：这是当下的天气情况，凭记忆无法知道，需要搜索实时天气。"),
    "sports": ("{q}：比赛结果和排名会随赛季更新，我记得的可能是旧赛季的，需要搜索最新赛果。",
               "{q}：冠军、比分和积分每场比赛后都会变，要查最近的比赛结果。",
               "{q}：体育赛事一直在进行，我需要搜索最新的赛况和排名再回答。"),
    "releases": ("{q}：软件和产品会不断发布新版本，我知道的版本可能已经过时，需要搜索最新发布信息。",
                 "{q}：版本号和发布日期经常更新，要查一下官方最新的发布情况。",
                 "{q}：新产品和新版本推出得很快，我需要搜索最近的发布消息。"),
    "office_holders": ("{q}：担任这个职务的人会因选举、任期或人事调整而更替，我记得的可能不是现任，需要查询。",
                       "{q}：职位上的人会换届或调整，凭记忆回答可能说错人，要搜索现任者。",
                       "{q}：人事任免随时可能变化，我需要搜索最新的任职信息。"),
    "rankings": ("{q}：排名会随每年或每期的榜单更新，我记得的可能是旧榜，需要搜索最新榜单。",
                 "{q}：榜单上的名次经常变化，要查一下最新一期的排名。",
                 "{q}：排名数据按期发布、不断变化，我需要搜索最近公布的结果。"),
    "news": ("{q}：这是正在发展的新闻事件，情况随时会更新，需要搜索最近的报道。",
             "{q}：新闻进展每天都在变，我记得的可能已经过时，要查一下最新消息。",
             "{q}：事件的最新进展我无从记得，需要搜索近期的新闻报道。"),
    "schedules": ("{q}：日程和时间安排每年或每次都会重新公布，也可能临时调整，需要搜索最新安排。",
                  "{q}：时间表会变动，我记得的可能是往年的，要查官方最新公布的时间。",
                  "{q}：具体的日期和时刻以最新通知为准，我需要搜索最近的安排。"),
    "policies_hours": ("{q}：规定、标准和营业时间会调整，我记得的可能是旧规定，需要搜索最新的官方信息。",
                       "{q}：政策和办事规则时有修订，要查一下现行的规定。",
                       "{q}：开放时间和政策细则可能随时变化，我需要搜索最新公布的版本。"),
    # Stable knowledge the student got wrong when probed (.knowledge): nothing changes but its
    # memory. These open with what kind of question it is, not with the query: a reason that
    # opens by restating the question taught the student "restate, then search", which it
    # then did on arithmetic and logic questions too (issue 20).
    "knowledge": ("这不是靠推理或计算能得出的，而是一个要记住的具体事实；我试着回忆，没有把握答对，需要搜索“{q}”核实。",
                  "题目里没有可以推算的条件，答案是需要记住的知识；我记得不确定，凭印象回答容易出错，要先搜索“{q}”。",
                  "这是一个具体的知识点，推理得不出来，只能靠记忆或查资料；我对答案没有把握，需要查一下“{q}”。"),
    "science": ("这题要讲清背后的科学原理，靠的是准确的知识而不是从题目推算；我对这个原理记得不准，需要搜索“{q}”的可靠解释。",
                "解释这个现象需要可靠的科学知识，题目本身不提供推理的条件；凭记忆解释可能出错，要查“{q}”的科普资料。",
                "这不是计算题，而是要说明科学道理；我对其中的原理没有把握，需要搜索“{q}”核实后再回答。"),
    None: ("{q}：这类信息会随时间变化，我记得的可能已经过时，需要搜索最新的情况。",
           "{q}：这个问题的答案会更新，凭记忆回答可能不准，要查一下最新信息。",
           "{q}：我没有关于这件事的最新数据，需要搜索近期的资料再回答。"),
}


def template_reasoning(query: str, category: str | None = None, seed: int = 0) -> str:
    """The code-written reason to search: one of ``category``'s wordings (unknown: the general
    ones), picked by ``seed`` so a rerun writes the same row.

    >>> template_reasoning("温网男单冠军", "sports")
    '温网男单冠军：比赛结果和排名会随赛季更新，我记得的可能是旧赛季的，需要搜索最新赛果。'
    >>> template_reasoning("温网男单冠军")
    '温网男单冠军：这类信息会随时间变化，我记得的可能已经过时，需要搜索最新的情况。'
    """
    variants = TEMPLATE_REASONS.get(category) or TEMPLATE_REASONS[None]
    return variants[seed % len(variants)].format(q=query)


def _subject(question: str) -> str:
    return question.strip().rstrip("？?。.!！ ")


def abstention(question: str, query: str, results: Sequence["Result"], missing: str | None = None) -> str:
    """The answer when no result concerns the question, or (``missing``) when the results concern
    it but do not give what it asks for: what was searched, what came back, what is missing. It
    says so plainly (``scoring.abstains`` reads it as an abstention).

    >>> from thinksearch.search.base import Result
    >>> abstention("英国首相叫什么名字？", "英国首相", [Result("日本首相石破茂", "…")])
    '我搜索了“英国首相”，但搜索结果里没有关于“英国首相叫什么名字”的信息：返回的结果讲的是“日本首相石破茂”，与这个问题无关。所以我无法根据搜索结果回答，建议查阅官方或权威来源的最新信息。'
    >>> abstention("最早一班高铁几点发车？", "京沪高铁", [Result("京沪高铁基本情况", "…")], missing="具体时间（几点）")
    '我搜索了“京沪高铁”，返回的结果讲的是“京沪高铁基本情况”，但结果里没有“最早一班高铁几点发车”问的具体时间（几点）。所以我无法根据搜索结果回答，建议查阅官方或权威来源的最新信息。'
    """
    from thinksearch import format as fmt

    # Titles are untrusted text, like the tool turn: neutralised so none can carry a tag.
    titles = "、".join(f"“{fmt.neutralize(' '.join(r.title.split()))[:24]}”" for r in results[:2]) \
        + ("等" if len(results) > 2 else "")
    end = "所以我无法根据搜索结果回答，建议查阅官方或权威来源的最新信息。"
    if missing is not None:
        return f"我搜索了“{query}”，返回的结果讲的是{titles}，但结果里没有“{_subject(question)}”问的{missing}。{end}"
    found = f"返回的结果讲的是{titles}，与这个问题无关" if results else "搜索没有返回任何结果"
    return f"我搜索了“{query}”，但搜索结果里没有关于“{_subject(question)}”的信息：{found}。{end}"


# An opening that says where the answer comes from ("根据以上搜索结果显示，", "搜索结果表明：").
_SOURCE_OPENING = re.compile(r"^\s*(?:(?:根据|依据|按照|从)(?:以上|上面的?|上述)?的?)?搜索结果(?:显示|表明|可知|来看|中|里)?[，,：:]?\s*")


def with_opening(answer: str, opening: str) -> str:
    """``answer`` opened with ``opening`` (empty: unchanged); an opening of the same kind that
    the teacher wrote is replaced, not doubled, and one that already starts like ``opening``
    is kept with what follows it (a citation).

    >>> with_opening("从搜索结果来看，金价约为每克800元[1]。", "根据搜索结果，")
    '根据搜索结果，金价约为每克800元[1]。'
    >>> with_opening("根据搜索结果[1]，金价约为每克800元。", "根据搜索结果，")
    '根据搜索结果[1]，金价约为每克800元。'
    >>> with_opening("金价约为每克800元[1]。", "根据搜索结果，")
    '根据搜索结果，金价约为每克800元[1]。'
    >>> with_opening("金价约为每克800元。", "")
    '金价约为每克800元。'
    """
    if not opening or answer.startswith(opening.rstrip("，,：: ")):
        return answer
    return opening + _SOURCE_OPENING.sub("", answer, count=1)
