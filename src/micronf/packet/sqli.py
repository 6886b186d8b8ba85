"""The default SQL-injection signatures of ValidateUrl: regexes over the normalized request-target.

Data, not a µNF: :class:`micronf.nfs.validate_url.ValidateUrl` compiles them (or the user's own list)
with :func:`micronf.packet.dfa.compile_patterns` and matches them with
:func:`micronf.packet.waf.url_target_search`; the traffic generator and the tests use them as the
reference set.
"""

from __future__ import annotations

__all__ = ["SQLI_SIGNATURES"]

# Written for the request-target as waf_normalize leaves it (decoded twice, comments as spaces, NULs
# gone), case-insensitive. Each one needs SQL syntax around the keyword, so ordinary paths and
# queries ("/union-station/selection", "?q=rock+and+roll", "O%27Reilly", "?order=price&select=all")
# do not trigger. Measured on the labelled corpus of tests/nfs/sqli_corpus.py (bench/dfa.py).
SQLI_SIGNATURES: tuple[str, ...] = (
    # 1. Boolean test after a value (tautology, boolean blind): ' OR '1'='1, 1 AND 1=2, " OR ""=",
    #    ') OR ('a'='a, 1' AND 'a'<'b, || and && (symboliclogical), LIKE/BETWEEN for '=' (equaltolike,
    #    between). The operand must be a number or a quoted word, so "rock and roll" is not one.
    r"[\s\d'\"()](and|or|xor|&&|\|\|)\s*\(*\s*(\d+|'\w*'?|\"\w*\"?)\s*(=|<|>|!|like\s|not\s|between\s|rlike\s|regexp\s|is\s|in\s*\()",
    # 2. Boolean test on a function call or a constant after a value: 1 AND LENGTH(database())=8,
    #    ' || pg_sleep(5), ' or true--
    r"[\s\d'\"()](and|or|xor|&&|\|\|)\s*((ascii|substr|substring|length|len|mid|if|exp|count|ord|hex|database|user|version|pg_sleep|sleep)\s*\(|true|false)",
    # 3. UNION-based extraction: union select, UNION ALL SELECT, union(select ...), and UNION
    #    followed by an unterminated comment (a terminated one is a space by now)
    r"union(\s|\(|all|distinct)+select|union(\s|\(|all|distinct)*/\*",
    # 4. Stacked query after a statement terminator: ;DROP TABLE, ; shutdown --, );SELECT pg_sleep(5)
    r";\s*(drop|delete|insert|update|shutdown|alter|create|truncate|exec|execute|select|declare|waitfor)[\s(;#-]",
    # 5. Quote break-out followed by a comment or a terminator: admin'--, '#, '/*, ')--, '; "--
    r"'\)*\s*(--|#|/\*|;)|\"\)*\s*(--|/\*|;)",
    # 6. An SQL line comment that cuts the rest of the query: at the end (id=1--, id=1-- -, id=1--+)
    #    or before the next parameter (id=1--&page=2)
    r"--[\s-]*$",
    r"--[\s-]*&",
    # 7. Time-based blind: sleep(5), pg_sleep(10), benchmark(5000000,md5(1)), waitfor delay '0:0:5'
    r"sleep\s*\(\s*\d+\s*\)|benchmark\s*\(|waitfor\s+(delay|time)\s",
    # 8. Schema enumeration (MySQL/PostgreSQL/MSSQL/SQLite catalogs)
    r"information_schema|sqlite_master|pg_catalog|sysobjects|syscolumns",
    # 9. Long hex literal used to smuggle strings (select 0x61646d696e, concat(0x3a,...)); not after
    #    '=' or '/', where hashes and ids (?tx=0x5c50..., /tx/0x5c50...) are legitimate
    r"[\s(,]0x[0-9a-f]{8,}",
    # 10. MySQL executable comment used to hide keywords: /*!50000union*/, /*!0select
    r"/\*!",
    # 11. Sub-select: (select ..., ((select, (SELECT(SLEEP(5)))
    r"\(\s*select[\s(]",
    # 12. File read/write from SQL: load_file('/etc/passwd'), into outfile / dumpfile
    r"load_file\s*\(|into\s+(out|dump)file",
    # 13. MSSQL stored procedures: exec master..xp_cmdshell, execute sp_configure, -- sp_password
    r"exec(ute)?\s+(master\.\.)?(xp|sp)_\w+|xp_cmdshell|sp_password",
    # 14. Server fingerprinting: @@version, @@datadir, ...
    r"@@(version|datadir|hostname|basedir|servername)",
    # 15. Column-count probing after a value: 1 order by 5, ') ORDER BY 3, 1 GROUP BY 1,2 (not
    #     "order by 5pm"); HAVING after a value; MySQL's PROCEDURE ANALYSE()
    r"[\d'\")]\s*(order|group)\s+by\s+\d|[\d'\")]\s*having\s|procedure\s+analyse",
    # 16. String building to dodge quote filters: char(97,100), concat(0x61,...), chr(39);
    #     error-based extraction: extractvalue(...), updatexml(...)
    r"(char|chr|concat|concat_ws|group_concat)\s*\(\s*(\d|0x)|extractvalue\s*\(|updatexml\s*\(",
    # 17. A SQL metacharacter still encoded after two decodings (triple encoding): ' " ; # -- /*
    r"%(27|22|3b|23|2d%2d|2f%2a)",
)
