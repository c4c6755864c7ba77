"""Chinese personal names.

Surnames are weighted by their share of the population (公安部 户籍人口 2020 ranking, in
per-mille; 罗/邓/曾/彭/谢/唐 raised a little, as they are more common in Sichuan). Given names are
one or two characters drawn from pools that differ by sex and by generation (names of people born
before 1965, 1965-1989 and from 1990 differ markedly: 建国/秀英 vs 伟/丽 vs 子轩/欣怡).
"""

from __future__ import annotations

import random

from synthetic.rng import Weighted

# (surname, per-mille share)
SURNAMES = Weighted([
    ("王", 71), ("李", 70), ("张", 67), ("刘", 54), ("陈", 53), ("杨", 33), ("黄", 24), ("赵", 22),
    ("吴", 20), ("周", 19), ("徐", 14), ("孙", 13), ("马", 12), ("朱", 12), ("胡", 12), ("郭", 11),
    ("何", 13), ("林", 10), ("罗", 14), ("高", 9), ("郑", 8), ("梁", 8), ("谢", 9), ("宋", 6),
    ("唐", 9), ("许", 6), ("韩", 5), ("冯", 5), ("邓", 9), ("曹", 5), ("彭", 7), ("曾", 8),
    ("肖", 6), ("田", 5), ("董", 4), ("袁", 5), ("潘", 4), ("于", 4), ("蒋", 5), ("蔡", 4),
    ("余", 5), ("杜", 4), ("叶", 4), ("程", 3), ("苏", 3), ("魏", 3), ("吕", 3), ("丁", 3),
    ("任", 4), ("沈", 3), ("姚", 3), ("卢", 3), ("姜", 3), ("崔", 2), ("钟", 3), ("谭", 3),
    ("陆", 2), ("汪", 2), ("范", 2), ("金", 2), ("石", 2), ("廖", 4), ("贾", 2), ("夏", 2),
    ("韦", 1), ("付", 3), ("方", 2), ("白", 2), ("邹", 2), ("孟", 1), ("熊", 3), ("秦", 2),
    ("邱", 2), ("江", 2), ("尹", 2), ("薛", 1), ("闫", 1), ("段", 2), ("雷", 2), ("侯", 1),
    ("龙", 2), ("史", 1), ("陶", 2), ("黎", 1), ("贺", 1), ("顾", 1), ("毛", 1), ("郝", 1),
    ("龚", 2), ("邵", 1), ("万", 1), ("钱", 1), ("严", 1), ("覃", 1), ("武", 1), ("戴", 1),
    ("莫", 1), ("孔", 1), ("向", 2), ("汤", 1), ("欧阳", 0.3), ("司马", 0.05), ("诸葛", 0.05),
])

# Given-name characters by (sex, generation). Sex '1' male, '2' female; generation 0 born <1965,
# 1 born 1965-1989, 2 born 1990 or later.
_POOLS = {
    ("1", 0): "国华明建文德志强福金永成春生军平荣发清林贵海忠兴富长光秀才祥全宝良",
    ("1", 1): "伟刚勇军斌涛强明杰磊超辉鹏华飞波亮峰平健勇东林兵俊斌浩军云龙志",
    ("1", 2): "浩宇轩子晨博文杰俊睿铭泽然涛鑫豪宇航凯翔瑞哲阳一辰逸宸昊皓霖",
    ("2", 0): "秀英兰芳玉珍桂华淑凤琼素萍明翠香群惠梅莲琴清菊云芬荣秀英珍",
    ("2", 1): "丽芳静敏燕艳娟霞红琳玲英萍莉琴慧洁梅蓉丹雪倩婷娜颖晓利",
    ("2", 2): "欣怡涵萱梓雨诗琪佳悦可馨思语婷瑶彤妍若子琳雅钰蕊依晨希一",
}
# Common two-character given names by generation (drawn whole, besides the character combinations).
_WHOLE = {
    ("1", 0): ["建国", "国庆", "建华", "志强", "德明", "永福", "长生", "建军", "国平", "福贵"],
    ("1", 1): ["建平", "海涛", "志勇", "小军", "晓东", "俊杰", "建波", "文斌", "小龙", "国强"],
    ("1", 2): ["子轩", "浩然", "宇航", "梓睿", "一鸣", "俊熙", "博文", "皓轩", "子墨", "宇泽"],
    ("2", 0): ["秀英", "桂英", "玉兰", "淑珍", "桂兰", "秀兰", "翠花", "素芬", "玉珍", "凤英"],
    ("2", 1): ["丽娟", "晓燕", "海燕", "小红", "丽华", "春梅", "雪梅", "晓丽", "红梅", "小琴"],
    ("2", 2): ["欣怡", "梓涵", "诗涵", "一诺", "雨桐", "紫萱", "可馨", "思琪", "佳怡", "语嫣"],
}


def generation(birth_year: int) -> int:
    return 0 if birth_year < 1965 else (1 if birth_year < 1990 else 2)


def surname(r: random.Random) -> str:
    return SURNAMES.pick(r)


def given_name(r: random.Random, sex: str, birth_year: int) -> str:
    key = (sex if sex in ("1", "2") else "1", generation(birth_year))
    x = r.random()
    if x < 0.25:
        return r.choice(_WHOLE[key])
    pool = _POOLS[key]
    if x < 0.55:  # single-character given name (more common in older generations)
        return r.choice(pool)
    return r.choice(pool) + r.choice(pool)


def full_name(r: random.Random, sex: str, birth_year: int, family_name: str | None = None) -> str:
    return (family_name or surname(r)) + given_name(r, sex, birth_year)
