"""Seeded synthetic marketplace ads with moderation labels.

There is no labelled production data yet, so the model is trained on ads generated
here. The generator is deterministic: it only uses ``random.Random(seed)`` (whose
output is stable across platforms and Python versions), so ``generate_ads(n, seed)``
returns the same ads everywhere and the committed model can be re-fitted in tests.

How an ad and its label are produced
------------------------------------
1. Sellers. There are ``max(1, n // 3)`` sellers, so a seller has about three ads.
   Each seller is verified with probability 0.55. A hidden "bad actor" flag is set
   for 25 % of unverified sellers and 4 % of verified ones. Verification is a
   property of the seller, so it is identical across all of a seller's ads.
2. Ads. ``item_id`` runs 1..n; each ad picks a seller uniformly at random and a
   category from ``CATEGORIES`` (1..12). ``images_qty`` is 0..10: bad actors post
   no photos half the time, other sellers 8 % of the time.
3. True violation. Drawn with probability
   ``sigmoid(-2.4 + 2.6 * bad_actor + 0.7 * unverified + 0.9 * no_images)``, so
   unverified sellers with 0 images are more likely to violate.
4. Text. Names and descriptions are built from per-category templates mixing
   Russian and English (item names, condition, delivery, price). A violating ad
   gets one or two violation cues, in the name 25 % of the time, otherwise in the
   description; 10 % of violations carry no textual cue at all (only the metadata
   gives them away). Cue families:

   - counterfeit: "реплика", "копия 1:1", "replica", "AAA copy", ...
   - missing documents: "без документов", "без ПТС", "no papers", ...
   - prepayment scams: "только предоплата", "100% предоплата", "prepayment only", ...
   - job / income scams: "гарантированный заработок", "guaranteed income", ...
   - crypto payments: "crypto", "USDT", "bitcoin", "криптовалюта", ...
   - off-platform contacts: phone numbers, "telegram @handle", "WhatsApp", e-mails.

   Clean ads sometimes (10 %) carry a "hard negative" that shares words with the
   cues ("оригинал, не реплика", "без предоплаты", "все документы есть"), so single
   words are not a perfect signal.
5. Label noise. 4 % of labels are flipped (moderators disagree), so held-out
   metrics are realistic rather than 100 %.

The resulting violation rate is about 24 % (n=6000, seed=42).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from chalicelib.domain.features import AdFeatures

# Categories used by the generator: a realistic small subset of 0..99.
CATEGORIES: dict[int, str] = {
    1: "electronics",
    2: "clothing",
    3: "auto",
    4: "realty",
    5: "jobs",
    6: "services",
    7: "home",
    8: "kids",
    9: "sport",
    10: "pets",
    11: "hobby",
    12: "beauty",
}

LABEL_NOISE = 0.04

_ITEMS: dict[int, list[str]] = {
    1: ["iPhone 13 128GB", "Смартфон Samsung Galaxy S21", "Наушники AirPods Pro", "Ноутбук Lenovo ThinkPad",
        "MacBook Air M1", "PlayStation 5", "Телевизор LG 55", "Apple Watch Series 7", "Xiaomi Redmi Note 12",
        "Игровая мышь Logitech", "iPad 9 64GB", "Sony WH-1000XM4"],
    2: ["Кроссовки Nike Air Max", "Куртка зимняя The North Face", "Сумка Louis Vuitton", "Джинсы Levi's 501",
        "Adidas Yeezy Boost", "Пуховик Moncler", "Платье вечернее", "Gucci belt", "Ботинки Timberland",
        "Футболка Supreme", "Пальто шерстяное", "Rolex Submariner"],
    3: ["Toyota Camry 2018", "Шины зимние R17", "Lada Vesta 2020", "Диски литые R16", "Kia Rio 2017",
        "Видеорегистратор", "BMW X5 2015", "Аккумулятор Varta", "Hyundai Solaris", "Автомагнитола Pioneer"],
    4: ["Сдаю 1-комнатную квартиру", "Квартира 2 комнаты у метро", "Room for rent", "Студия посуточно",
        "Продам дачу", "Гараж в кооперативе", "Apartment for rent", "Комната в общежитии"],
    5: ["Требуется курьер", "Вакансия: менеджер по продажам", "Remote job", "Работа на дому",
        "Требуется продавец-консультант", "Оператор call-центра", "Водитель категории B", "Part-time job"],
    6: ["Ремонт квартир под ключ", "Репетитор по английскому", "Грузоперевозки", "Маникюр на дому",
        "Ремонт телефонов", "Cleaning service", "Фотограф на свадьбу", "Компьютерная помощь"],
    7: ["Диван угловой", "Стиральная машина Bosch", "Холодильник Atlant", "Кухонный стол", "Шкаф-купе",
        "Микроволновка Samsung", "Office chair", "Набор посуды", "Пылесос Dyson V11"],
    8: ["Детская коляска", "Автокресло Britax", "Конструктор LEGO", "Детская кроватка", "Стульчик для кормления",
        "Baby stroller", "Комбинезон зимний детский", "Велосипед детский"],
    9: ["Велосипед горный", "Гантели 2x10 кг", "Беговая дорожка", "Палатка 4-местная", "Сноуборд Burton",
        "Коньки хоккейные", "Yoga mat", "Тренажер эллиптический"],
    10: ["Щенки лабрадора", "Котята британские", "Корм для собак Royal Canin", "Аквариум 100 л",
         "Переноска для кошки", "Попугай волнистый", "Dog leash"],
    11: ["Гитара акустическая Yamaha", "Книги фэнтези", "Коллекция монет", "Настольная игра Монополия",
         "Vinyl records", "Фотоаппарат Canon EOS", "Синтезатор Casio", "Марки СССР"],
    12: ["Духи Chanel No 5", "Крем для лица", "Фен Dyson Supersonic", "Набор косметики", "Perfume Dior Sauvage",
         "Массажер для шеи", "Витамины", "Палетка теней"],
}

# Description building blocks per kind of category: (opening lines, details, logistics).
_GOODS = (
    ["Состояние отличное.", "Б/у, в хорошем состоянии.", "Новый, в упаковке.", "Почти не пользовались.",
     "Есть небольшие царапины.", "Like new.", "Used, works perfectly.", "Brand new, sealed.",
     "Полный комплект.", "Состояние как на фото."],
    ["Причина продажи: переезд.", "Покупали в прошлом году.", "Все работает.", "Чек есть.",
     "Гарантия до конца года.", "Размер уточняйте.", "Отвечу на вопросы в чате.",
     "Selling because I upgraded.", "Receipt available.", "Смотрите фото.", "Один владелец."],
    ["Самовывоз от метро.", "Доставка по городу.", "Отправлю Авито доставкой.", "Pickup in the city center.",
     "Возможна доставка.", "Встреча в центре.", "Shipping available.", "Заберите сами."],
)
_REALTY = (
    ["Светлая квартира после ремонта.", "Cozy and bright, renovated.", "Есть вся мебель и техника.",
     "Чистый подъезд, тихие соседи.", "Хороший вариант для семьи."],
    ["Залог 1 месяц.", "Коммунальные платежи включены.", "Можно с детьми.", "Без животных.",
     "Long-term only.", "Договор аренды.", "Собственник."],
    ["5 минут до метро.", "Рядом парк и школа.", "Close to the subway.", "Просмотр в любое время."],
)
_JOBS = (
    ["Ищем ответственного сотрудника.", "Looking for a reliable person.", "Официальное трудоустройство.",
     "Дружный коллектив."],
    ["График 5/2.", "Сменный график.", "Обучение за счет компании.", "Опыт от 1 года.",
     "Full-time or part-time.", "Зарплата по итогам собеседования.", "Выплаты два раза в месяц."],
    ["Офис у метро.", "Работа в вашем районе.", "Remote possible.", "Собеседование в офисе."],
)
_SERVICES = (
    ["Опыт работы 10 лет.", "Работаю аккуратно и быстро.", "Professional service.", "Качество гарантирую."],
    ["Выезд мастера бесплатно.", "Работаю по договору.", "Отзывы в профиле.", "Материалы свои.",
     "Free estimate.", "Скидка пенсионерам."],
    ["Работаю по всему городу.", "Выезд в область.", "Запись через сайт.", "Available on weekends."],
)
_PETS = (
    ["Здоровые и активные.", "Приучены к лотку.", "Healthy and playful.", "Ласковые и игривые."],
    ["Привиты по возрасту.", "Есть ветпаспорт.", "Родители на фото.", "Vaccinated.", "Едят сухой корм."],
    ["Самовывоз.", "Помогу с доставкой.", "Pickup only.", "Покажу по видеосвязи."],
)
_POOLS_BY_CATEGORY = {4: _REALTY, 5: _JOBS, 6: _SERVICES, 10: _PETS}
_PRICE = ["Торг уместен.", "Без торга.", "Цена {price} руб.", "Price {price}.", "Небольшой торг.",
          "Цена окончательная.", "Обмен не интересует."]
_PRICES = ["500", "1000", "1500", "2000", "3000", "5000", "7000", "10000", "15000", "25000", "40000"]

_HANDLES = ["shop_best", "sale24", "deals_msk", "top_seller", "luxbrand", "easy_money", "fastcash",
            "cryptopro", "original_store", "megasale"]

_COUNTERFEIT = ["реплика", "копия 1:1", "реплика высокого качества", "replica", "AAA copy", "люкс копия",
                "fake, looks like original", "копия оригинала"]
_NO_DOCS = ["без документов", "документов нет", "без ПТС", "no papers", "без чека и документов",
            "документы потеряны"]
_PREPAYMENT = ["только предоплата", "100% предоплата", "предоплата на карту", "prepayment only",
               "send deposit first", "предоплата 50%, остальное при получении"]
_JOB_SCAM = ["гарантированный заработок", "заработок от 5000 в день", "guaranteed income",
             "пассивный доход без вложений", "доход 200000 в месяц без опыта", "easy money from home"]
_CRYPTO = ["оплата в crypto", "принимаю USDT", "bitcoin only", "инвестиции в криптовалюту",
           "crypto payment", "оплата криптовалютой"]
_HARD_NEGATIVES = ["Оригинал, не реплика.", "Без предоплаты, оплата при получении.", "Все документы есть.",
                   "Original, not a replica.", "No prepayment needed.", "Документы и чек в наличии.",
                   "Оплата только при встрече."]

# Which cue families fit which category: counterfeit jobs or crypto dogs would look odd.
_FAMILIES_BY_CATEGORY: dict[int, list[str]] = {
    1: ["counterfeit", "no_docs", "prepayment", "crypto", "contact"],
    2: ["counterfeit", "prepayment", "contact"],
    3: ["no_docs", "prepayment", "crypto", "contact"],
    4: ["no_docs", "prepayment", "contact"],
    5: ["job_scam", "crypto", "contact"],
    6: ["job_scam", "prepayment", "contact"],
    7: ["prepayment", "contact"],
    8: ["prepayment", "contact"],
    9: ["prepayment", "counterfeit", "contact"],
    10: ["no_docs", "prepayment", "contact"],
    11: ["prepayment", "crypto", "contact"],
    12: ["counterfeit", "prepayment", "contact"],
}


@dataclass(frozen=True, slots=True)
class GeneratedAd:
    seller_id: int
    is_verified_seller: bool
    item_id: int
    name: str
    description: str
    category: int
    images_qty: int
    is_violation: bool

    def features(self) -> AdFeatures:
        return AdFeatures.of(self)


def _contact(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        phone = f"+7 9{rng.randrange(10, 100)} {rng.randrange(100, 1000)}-{rng.randrange(10, 100)}-{rng.randrange(10, 100)}"
        return rng.choice([f"звоните {phone}", f"WhatsApp {phone}", f"call {phone}"])
    if kind == 1:
        return rng.choice(["пишите в telegram", "telegram", "tg", "пишите в телеграм"]) + f" @{rng.choice(_HANDLES)}"
    if kind == 2:
        return f"email: {rng.choice(_HANDLES)}@{rng.choice(['mail.ru', 'gmail.com', 'yandex.ru'])}"
    return f"пишите в вотсап 8{rng.randrange(900, 1000)}{rng.randrange(1_000_000, 10_000_000)}"


def _cue(family: str, rng: random.Random) -> str:
    if family == "contact":
        return _contact(rng)
    pool = {"counterfeit": _COUNTERFEIT, "no_docs": _NO_DOCS, "prepayment": _PREPAYMENT,
            "job_scam": _JOB_SCAM, "crypto": _CRYPTO}[family]
    return rng.choice(pool)


def _description(category: int, rng: random.Random) -> list[str]:
    openings, details, logistics = _POOLS_BY_CATEGORY.get(category, _GOODS)
    parts = [rng.choice(openings)]
    parts += rng.sample(details, rng.randint(0, 2))
    if rng.random() < 0.7:
        parts.append(rng.choice(logistics))
    if category != 5 and rng.random() < 0.7:  # vacancies are not haggled over
        parts.append(rng.choice(_PRICE).format(price=rng.choice(_PRICES)))
    rng.shuffle(parts)
    return parts


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def generate_ads(n: int, seed: int) -> list[GeneratedAd]:
    """Return ``n`` labelled ads with item_id 1..n; the same (n, seed) gives the same ads."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    n_sellers = max(1, n // 3)
    verified: list[bool] = []
    bad_actor: list[bool] = []
    for _ in range(n_sellers):
        is_verified = rng.random() < 0.55
        verified.append(is_verified)
        bad_actor.append(rng.random() < (0.04 if is_verified else 0.25))

    ads: list[GeneratedAd] = []
    for item_id in range(1, n + 1):
        seller = rng.randrange(n_sellers)
        category = rng.choice(list(CATEGORIES))
        no_images = rng.random() < (0.5 if bad_actor[seller] else 0.08)
        images_qty = 0 if no_images else rng.randint(1, 10)
        logit = -2.4 + 2.6 * bad_actor[seller] + 0.7 * (not verified[seller]) + 0.9 * no_images
        violation = rng.random() < _sigmoid(logit)

        name = rng.choice(_ITEMS[category])
        parts = _description(category, rng)
        if violation and rng.random() >= 0.10:
            families = _FAMILIES_BY_CATEGORY[category]
            for family in rng.sample(families, 2 if rng.random() < 0.3 else 1):
                cue = _cue(family, rng)
                if family != "contact" and rng.random() < 0.25:
                    name = f"{name} {cue}"
                else:
                    parts.insert(rng.randrange(len(parts) + 1), cue.capitalize() + ".")
        elif not violation and rng.random() < 0.10:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(_HARD_NEGATIVES))
        # A few real ads have no description at all.
        description = "" if rng.random() < 0.03 else " ".join(parts)

        label = violation != (rng.random() < LABEL_NOISE)
        ads.append(GeneratedAd(
            seller_id=seller + 1,
            is_verified_seller=verified[seller],
            item_id=item_id,
            name=name,
            description=description,
            category=category,
            images_qty=images_qty,
            is_violation=label,
        ))
    return ads
