"""The teacher's prompts for each synthesis stage, as chat messages (DESIGN.md section 2).

These are the teacher's prompts, not the student's system prompt (:mod:`thinksearch.format`
owns that). Short output is asked for on purpose: the quickstart teacher is a 0.5B model on a
CPU, where every token costs, and short traces are what a 0.5B student can learn to write.
"""

from __future__ import annotations

import json
from typing import Any

TEACHER_SYSTEM = "你是一位知识渊博、表达简洁的中文助手。只输出被要求的内容，不要使用任何标签、标记或Markdown标题。"

STEPS_TASK = "请针对下面的问题写出你的思考过程：理解题意，列出关键步骤或依据，必要时验证结果。"
STEPS_LENGTH = "只写思考过程本身，不要另写最终答案的总结。简洁清楚，一般不超过200字。"
# ``synth.brief_traces``: the steps task above is what the teacher turns into headed sections
# ("理解题意：… 关键步骤：1. …"), which a student copies and runs past the eval's token limit.
# Named sections are left out here on purpose: asked to "抓住关键条件, 一步步推出结果", the 0.5B
# teacher wrote those phrases as labels (5 of 42 traces), so this asks for prose only.
BRIEF_TASK = "请针对下面的问题，用两三句连贯的中文写出你的推理，最后一句给出结论。"
BRIEF_LENGTH = "不要分点，不要写标题，一般不超过100字。"
ANALYSIS_PROMPT = "{task}{length}\n\n问题：{question}"
# Rationalisation (STaR): the answer is given, the trace must reach it on its own. Told not to
# mention it, since a trace that says "已知答案是……" teaches the student to cite a hint it never gets.
HINT_PROMPT = (
    "{task}这道题的正确结果是：{answer}。你的思考过程要靠自己的推理一步步得出这个结果，"
    "不要说结果是已知的或别人给的，也不要提到这句话。{length}\n\n问题：{question}"
)
ANSWER_PROMPT = (
    "问题：{question}\n\n思考过程：\n{analysis}\n\n"
    "请根据上面的思考过程，直接给出面向用户的最终回答。准确、简洁，一到三句话，不要复述思考过程。"
)
# Three examples on different subjects, each naming what changes: given one stock sentence
# ("this needs real-time data"), a 0.5B teacher copies it for almost every question, and a
# student trained on it learns a phrase that fits any question, science and opinion included.
QUERY_EXAMPLES = "\n".join(json.dumps(e, ensure_ascii=False) for e in (
    {"reasoning": "比特币的价格每分每秒都在变，我记得的数字早已过时，要查今天的行情。", "query": "比特币价格 今日"},
    {"reasoning": "日本首相会因选举和换届而更替，我知道的人选可能已经不是现任，需要核实。", "query": "日本现任首相"},
    {"reasoning": "成都明天的天气要看最新的预报，凭记忆无法知道。", "query": "成都 明天天气预报"},
))
QUERY_PROMPT = (
    "下面的问题需要最新或实时的信息才能准确回答。请用一句话说明：这个问题问的哪一项信息会随时间变化，为什么不能凭记忆回答；"
    "再给出一个简短的搜索关键词。只输出一个JSON对象，格式参考下面的例子（每行一个）：\n{examples}\n"
    "query只占一行，不超过20个字。\n\n问题：{question}"
)
GROUNDED_PROMPT = (
    "问题：{question}\n\n搜索结果：\n{results}\n\n"
    "请只根据上面的搜索结果，用自己的话回答问题：先直接给出答案，并在用到的信息后用方括号编号标注来源，例如“……[1]”。"
    "不要照抄搜索结果的原文，不要编造搜索结果中没有的信息；如果搜索结果不足以回答，请如实说明。回答简洁，一到三句话。"
)


def _chat(user: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def _trace_task(brief: bool) -> dict[str, str]:
    return {"task": BRIEF_TASK, "length": BRIEF_LENGTH} if brief else {"task": STEPS_TASK, "length": STEPS_LENGTH}


def analysis_messages(question: str, brief: bool = False) -> list[dict[str, Any]]:
    return _chat(ANALYSIS_PROMPT.format(question=question, **_trace_task(brief)))


def hint_messages(question: str, answer: str, brief: bool = False) -> list[dict[str, Any]]:
    return _chat(HINT_PROMPT.format(question=question, answer=answer, **_trace_task(brief)))


def answer_messages(question: str, analysis: str) -> list[dict[str, Any]]:
    return _chat(ANSWER_PROMPT.format(question=question, analysis=analysis))


def query_messages(question: str) -> list[dict[str, Any]]:
    return _chat(QUERY_PROMPT.format(question=question, examples=QUERY_EXAMPLES))


def grounded_messages(question: str, results_text: str) -> list[dict[str, Any]]:
    return _chat(GROUNDED_PROMPT.format(question=question, results=results_text))
