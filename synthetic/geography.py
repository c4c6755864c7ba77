"""内江市 (5110): its five county-level divisions, their towns/sub-districts and addresses.

Each division lists its 街道 (urban sub-districts) and 镇 (towns); every town belongs to the
catchment of one primary-care centre (乡镇卫生院 or 社区卫生服务中心) of that division, which keeps
the residents' health records. Population weights follow the 2020 census roughly
(市中区 ~0.5 M, 东兴区 ~0.6 M, 威远县 ~0.6 M, 资中县 ~0.8 M, 隆昌市 ~0.55 M).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synthetic.reference import city_divisions
from synthetic.rng import Weighted

CITY_NAME = "内江市"
CITY_DIVISION = "511000"


@dataclass(frozen=True)
class Town:
    name: str
    urban: bool          # 街道 (flats, 小区) vs 镇 (mostly villages, 村/组)
    centre: int          # index of the division's primary-care centre serving it


@dataclass(frozen=True)
class District:
    code: str
    name: str
    weight: float
    is_county: bool      # 县/县级市 (has a county hospital and township centres) vs urban 区
    towns: tuple[Town, ...]


def _towns(spec: str) -> tuple[Town, ...]:
    """'城东街道:0 白马镇:0' -> Towns (a name ending in 街道 is urban)."""
    out = []
    for item in spec.split():
        name, centre = item.split(":")
        out.append(Town(name, name.endswith("街道"), int(centre)))
    return tuple(out)


_LAYOUT = {
    # code: (weight, is_county, towns with the index of the centre serving each)
    "511002": (0.15, False, "城东街道:0 城西街道:0 玉溪街道:0 牌楼街道:0 乐贤街道:0 白马镇:0 史家镇:0"),
    "511011": (0.19, False, "东兴街道:0 西林街道:0 新江街道:0 胜利街道:0 高桥街道:0 田家镇:0 郭北镇:0"),
    "511024": (0.20, True, "严陵镇:0 新场镇:0 向义镇:0 连界镇:1 镇西镇:1 界牌镇:1"),
    "511025": (0.26, True, "重龙镇:0 球溪镇:0 水南镇:0 归德镇:1 银山镇:1 罗泉镇:1"),
    "511083": (0.20, True, "金鹅街道:0 云顶镇:0 石燕桥镇:0 古湖街道:1 胡家镇:1 响石镇:1"),
}


def districts() -> tuple[District, ...]:
    out = []
    for code, name in city_divisions():
        weight, is_county, towns = _LAYOUT[code]
        out.append(District(code, name, weight, is_county, _towns(towns)))
    return tuple(out)


# Birthplaces of residents born outside the city (GB/T 2260 county codes in Sichuan/Chongqing).
MIGRANT_BIRTHPLACES = Weighted([
    ("510104", 3), ("510107", 2), ("510302", 3), ("510311", 2), ("510502", 2), ("510704", 1),
    ("510903", 2), ("511102", 2), ("511302", 2), ("511402", 1), ("511502", 1), ("511702", 1),
    ("512002", 2), ("500101", 1), ("500112", 1), ("500226", 1),
])

_ROADS = "玉溪路 大千路 汉渝大道 新江路 公园街 交通路 沱江路 甜城大道 桂湖街 梅家山路 北站路 西林大道 东兴大道 文英街".split()
_ESTATES = ("翡翠花园 阳光城 滨江花园 甜城湖畔 锦绣园 东方明珠 凯旋名城 和谐家园 学府名都 沱江一号 "
            "金科世界城 碧桂园 恒大名都 城市印象 大千苑 书香门第 紫薇花园 兴隆苑").split()
_VILLAGES = ("高楼 石坪 新桥 双河 大堰 黄桷 观音 碾子 白果 红旗 团结 长岭 金山 桂花 青杠 龙井 楠木 荷花 "
             "柏林 水口 莲花 石堰 杨柳 新华 和平 永安 太平 回龙 狮子 三星 铁佛 白鹤 五星 清河").split()


def address(r: random.Random, district: District, town: Town) -> str:
    """A household address: district + 街道/镇 + 小区/村 + 号. About 4 % contain an ASCII comma
    (as clerks type them), so CSV writers must quote them."""
    sep = "," if r.random() < 0.04 else ""
    if town.urban or r.random() < 0.3:
        if r.random() < 0.75:
            place = f"{r.choice(_ESTATES)}{r.randint(1, 32)}栋{r.randint(1, 4)}单元{r.randint(1, 28)}{r.randint(1, 6):02d}号"
        else:
            place = f"{r.choice(_ROADS)}{r.randint(1, 480)}号"
    else:
        place = f"{r.choice(_VILLAGES)}村{r.randint(1, 12)}组{r.randint(1, 99)}号"
    return f"{CITY_NAME}{district.name}{town.name}{sep}{place}"
