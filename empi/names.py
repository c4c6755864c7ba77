"""Name normalisation for linkage: Hanzi (simplified), toneless pinyin, surname split.

* full-width letters and spaces become half-width (NFKC), inner spaces and the middle dot
  (维吾尔族 names: 买买提·艾力) are removed;
* traditional characters common in names become simplified (a table of the variants seen in
  registrations; no dependency for this);
* the toneless pinyin comes from pypinyin, character by character (context-free, so the same
  character always reads the same in every name), with the surnames whose reading differs
  (曾 zeng, 单 shan, 覃 qin ...) fixed by a table;
* a name sent in pinyin only ("ZHANG Wei", "zhang wei") has no Hanzi form; its pinyin is the
  letters, lower-case, without spaces, and its surname is the first word.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["normalise_name", "to_simplified", "COMPOUND_SURNAMES"]

# Traditional → simplified, for characters frequent in Chinese names and surnames.
_TRAD = (
    "陳陈張张劉刘楊杨黃黄趙赵吳吴週周徐徐孫孙馬马朱朱胡胡郭郭何何林林羅罗高高鄭郑梁梁謝谢宋宋唐唐許许韓韩馮冯"
    "鄧邓曹曹彭彭曾曾蕭萧肖肖田田董董袁袁潘潘於于蔣蒋蔡蔡餘余杜杜葉叶程程蘇苏魏魏呂吕丁丁任任沈沈姚姚盧卢姜姜"
    "崔崔鍾钟鐘钟譚谭陸陆汪汪範范金金石石廖廖賈贾夏夏韋韦付付方方白白鄒邹孟孟熊熊秦秦邱邱江江尹尹薛薛閆闫段段"
    "雷雷侯侯龍龙史史陶陶黎黎賀贺顧顾毛毛郝郝龔龚邵邵萬万錢钱嚴严覃覃武武戴戴莫莫孔孔向向湯汤歐欧陽阳司司諸诸葛葛"
    "國国華华偉伟麗丽軍军紅红蘭兰鳳凤東东濤涛強强興兴榮荣貴贵發发長长寶宝淑淑莉莉琳琳慧慧潔洁夢梦雲云飛飞鵬鹏"
    "輝辉傑杰龍龙燕燕豔艳艷艳靜静穎颖婷婷雙双鑫鑫瑩莹瑤瑶憶忆詩诗語语萱萱馨馨銘铭澤泽軒轩博博晨晨睿睿廣广義义"
    "禮礼賢贤順顺壽寿祿禄財财聰聪慶庆鴻鸿鳴鸣愛爱蓮莲親亲歡欢樂乐寧宁廳厅樹树峰峰嶺岭濱滨蘋苹劍剑鋒锋銀银鐵铁"
    "勝胜紀纪維维綠绿紹绍經经結结絲丝純纯納纳紡纺線线練练縣县總总蓉蓉筱筱娟娟霞霞艷艳麗丽寶宝"
)
_TRAD_MAP = {_TRAD[i]: _TRAD[i + 1] for i in range(0, len(_TRAD), 2) if _TRAD[i] != _TRAD[i + 1]}
_TRANS = str.maketrans(_TRAD_MAP)

COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 司徒 东方 皇甫 令狐 慕容 尉迟 夏侯 公孙 长孙 宇文 独孤 端木 西门 南宫 万俟 轩辕".split())
# Surnames whose reading as a surname differs from the character's usual reading.
_SURNAME_PINYIN = {"曾": "zeng", "单": "shan", "解": "xie", "仇": "qiu", "朴": "piao", "查": "zha", "区": "ou",
                   "覃": "qin", "盖": "ge", "缪": "miao", "翟": "zhai", "召": "shao", "乐": "yue", "种": "chong",
                   "秘": "bi", "重": "chong", "尉迟": "yuchi", "万俟": "moqi", "长孙": "zhangsun", "教": "jiao",
                   "员": "yun", "句": "gou", "华": "hua", "任": "ren", "沈": "shen", "贾": "jia", "柏": "bai"}
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"^[a-z][a-z ]*$")
_DROP = re.compile(r"[\s·•・.\-_'’,，]+")


def to_simplified(text: str) -> str:
    return text.translate(_TRANS)


@lru_cache(maxsize=65536)
def _char_pinyin(ch: str) -> str:
    from pypinyin import Style, lazy_pinyin

    out = lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")
    return out[0] if out else ""


@lru_cache(maxsize=4096)
def _surname_pinyin(surname: str) -> str:
    fixed = _SURNAME_PINYIN.get(surname)
    return fixed if fixed is not None else "".join(_char_pinyin(c) for c in surname)


def normalise_name(raw: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(name_hanzi, name_pinyin, surname_pinyin, given_pinyin) of a name as sent; Nones when empty.

    >>> normalise_name("陳 國華")
    ('陈国华', 'chenguohua', 'chen', 'guohua')
    >>> normalise_name("ZHANG  Wei")
    (None, 'zhangwei', 'zhang', 'wei')
    """
    if raw is None:
        return None, None, None, None
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        return None, None, None, None
    if _HAN.search(text):
        hz = to_simplified(_DROP.sub("", text))
        hz = "".join(c for c in hz if _HAN.match(c))
        if not hz:
            return None, None, None, None
        n = 2 if len(hz) > 2 and hz[:2] in COMPOUND_SURNAMES else 1
        surname, given = hz[:n], hz[n:]
        sp = _surname_pinyin(surname)
        gp = "".join(_char_pinyin(c) for c in given)
        return hz, sp + gp, sp, gp or None
    low = re.sub(r"[\s·.\-_,]+", " ", text.lower()).strip()
    if not _LATIN.match(low):
        return None, None, None, None
    words = low.split()
    return None, "".join(words), words[0], "".join(words[1:]) or None
