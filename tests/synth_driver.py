"""Fixtures for synthesis tests: small question pools, a deterministic search backend, and a
driver that runs ``synthesize`` in a subprocess (for the kill and signal tests).

Run as: ``python tests/synth_driver.py CONFIG.json`` (a SynthConfig as JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from thinksearch.search.base import Result, SearchError

THINKING = [
    "正方形面积是另一个的4倍，周长比是多少？", "为什么冬天窗户内侧会结霜？", "一个数的3倍加5等于20，这个数是多少？",
    "光合作用需要哪些条件？", "递归函数为什么需要终止条件？", "三个人分两个苹果怎么分才公平？", "水的沸点为什么在高原上变低？",
    "如何判断一个年份是不是闰年？", "鸡兔同笼共10个头28只脚，各几只？", "为什么铁会生锈而金不会？", "二分查找的时间复杂度是多少？",
    "月亮为什么有阴晴圆缺？", "一列火车长200米，以每秒20米通过一座1000米的桥要多久？", "为什么夏天穿浅色衣服更凉快？",
    "甲乙丙三人中只有一人说真话，如何推出谁是小偷？", "哈希表冲突有哪些常见的解决办法？", "为什么说地球是一个近似的球体？",
    "把一根绳子对折三次后从中间剪断，会得到几段？", "植物的根为什么向下生长？", "快速排序在最坏情况下为什么会退化？",
    "声音在水中和空气中哪个传播得快？", "一个班有男生24人女生18人，男女生人数比是多少？", "为什么飞机能在空中飞行？",
    "如何用两个栈实现一个队列？", "人为什么会打哈欠？", "复利和单利有什么区别？", "为什么彩虹总是出现在太阳的对面？",
    "一个长方体的长宽高分别是3、4、5，它的体积是多少？", "TCP三次握手为什么不是两次？", "为什么海水是咸的？",
    "小明比小红大3岁，五年后两人年龄和是41，小明现在几岁？", "疫苗是如何让人体产生免疫力的？", "什么是动态规划，它适合解决什么问题？",
    "为什么冰会浮在水面上？", "从1加到100的和是多少？", "解释一下供给和需求如何决定价格。", "为什么高铁的铁轨没有缝隙？",
    "一个圆的半径扩大到原来的2倍，面积扩大到几倍？", "进程和线程有什么区别？", "为什么人在高海拔地区容易缺氧？",
    "[泄漏] 一个梯形上底3下底5高4，面积多少？", "[截断] 请详细推导勾股定理的证明过程。", "[循环] 为什么天空是蓝色的？",
    "[R1] 一个骰子连续掷两次，点数和为7的概率是多少？",
]
SEARCH = [
    "北京明天会下雨吗？", "今天美元兑人民币汇率多少？", "英超本赛季积分榜第一是谁？", "最新版本的Python是多少？",
    "上海到杭州的高铁今天还有票吗？", "现任日本首相是谁？", "黄金价格今天涨了吗？", "本周票房冠军是哪部电影？",
    "苹果最新发布的手机是哪款？", "深圳今天的空气质量怎么样？", "比特币现在多少钱一个？", "今年诺贝尔文学奖得主是谁？",
    "广州地铁十一号线开通了吗？", "现在的一年期存款利率是多少？", "昨晚NBA湖人队的比赛结果如何？", "成都这周末适合出去爬山吗？",
    "特斯拉股价今天收盘多少？", "当前最火的国产大模型是哪个？", "下一届世界杯在哪里举办？", "今年高考报名人数是多少？",
    "国内油价下一次调整在什么时候？", "香港今天的恒生指数是多少点？", "最新一期的CPI数据是多少？", "西湖景区今天人多不多？",
    "[换行] 以太坊现在的价格是多少？", "[无引用] 腾讯今天的股价是多少？", "[照抄] 今天上证指数收盘多少点？", "[截断] 最近有什么重要的科技新闻？", "故障 明天的航班会延误吗？",
    "[泛泛] 白银现在多少钱一克？",
]
# Rows each pool can give: [泄漏] [截断] [循环] fail their gates; of the search questions
# [无引用] [照抄] [截断] [泛泛] fail theirs, 故障 meets a dead backend and one overlaps EVAL.
THINKING_ROWS = len(THINKING) - 3
SEARCH_ROWS = len(SEARCH) - 6
EVAL = [{"type": "thinking", "question": "为什么天空在傍晚会变红？"}, {"type": "search", "question": "今天北京的天气怎么样？"},
        {"type": "search", "question": "现任日本首相是谁呢"}]  # the last one overlaps a pool question


class FakeSearch:
    """Deterministic results derived from the query; a query containing 故障 fails like a dead backend."""

    name = "fake"

    def search(self, query: str, k: int = 5) -> list[Result]:
        if "故障" in query:
            raise SearchError("fake search backend at http://127.0.0.1:1 is down")
        return [Result(f"{query}（第{i}条）", f"关于“{query}”的报道摘要 {i}，含 <tool_call> 字样", f"https://news.example/{i}",
                       f"2025-06-0{i}", "示例新闻") for i in range(1, min(k, 3) + 1)]


def write_pools(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thinking.txt").write_text("# thinking pool\n\n" + "\n".join(THINKING) + "\n", encoding="utf-8")
    (folder / "search.jsonl").write_text("\n".join(json.dumps({"question": q}, ensure_ascii=False) for q in SEARCH) + "\n",
                                         encoding="utf-8")
    (folder / "eval.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in EVAL) + "\n", encoding="utf-8")
    return {"thinking_questions": str(folder / "thinking.txt"), "search_questions": str(folder / "search.jsonl"),
            "eval_questions": str(folder / "eval.jsonl")}


def main() -> int:
    from thinksearch.config import SynthConfig, from_dict
    from thinksearch.synth import synthesize

    cfg = from_dict(SynthConfig, json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")), "synth")
    stats = synthesize(cfg, search=FakeSearch(), progress=False)
    print(json.dumps(stats.to_dict(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
