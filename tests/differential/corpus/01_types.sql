-- Types, literals, casts and the text PostgreSQL prints for them.
SELECT 1, -1, 2147483647, -2147483648, 2147483648, 9223372036854775807;
SELECT 99999999999999999999;
SELECT 1.5, -0.25, 1.50, 100.000, 1e3, 1.5e-3, .5;
SELECT 1.5::float8, 0.1::double precision, 1e20::float8, 1e-5::float8, 123456789012345678::float8;
SELECT 0.1::real, 1.5::real, 3.14159265::real, 1e10::real;
SELECT 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float8;
SELECT 1::smallint, 32767::smallint, '-32768'::smallint;
SELECT 32768::smallint;
SELECT '123'::int, ' 42 '::int, '-7'::bigint;
SELECT 'abc'::int;
SELECT '1.5'::int;
SELECT '99999999999'::int;
SELECT 2.5::int, 3.5::int, -2.5::int, 2.5::float8::int, 3.5::float8::int;
SELECT 12.345::numeric(5,2), 12.344::numeric(5,2), 0.005::numeric(3,2);
SELECT 123.45::numeric(4,2);
SELECT 1::numeric / 3, 2::numeric / 3, 10::numeric / 4, 1.0 / 3, 100 / 3.0;
SELECT 0.1 + 0.2, 0.1::float8 + 0.2::float8, 1.10 * 2, 1.10 * 2.00;
SELECT 7 / 2, -7 / 2, 7 % 3, -7 % 3, 7.5 % 2;
SELECT 'true'::boolean, 'yes'::boolean, 'off'::boolean, 't'::boolean, '0'::boolean;
SELECT 'maybe'::boolean;
SELECT true, false, NULL::boolean;
SELECT 'abc'::text, 'abc'::varchar(2), 'abc'::char(5), 'ab'::char(1);
SELECT 'a'::char(3) = 'a'::char(5), 'a '::text = 'a'::text, length('ab  '::char(4));
SELECT '2024-02-29'::date, DATE '1999-12-31', '2024-01-01'::date + 30, '2024-03-01'::date - '2024-02-01'::date;
SELECT '2024-02-30'::date;
SELECT 'yesterdayish'::date;
SELECT '2024-01-02 03:04:05'::timestamp, '2024-01-02 03:04:05.25'::timestamp, '2024-01-02'::timestamp;
SELECT '2024-01-02 03:04:05+02'::timestamptz, '2024-01-02 03:04:05Z'::timestamptz, '2024-01-02T10:00:00-05:00'::timestamptz;
SELECT '2024-01-02 03:04:05'::timestamp::date, '2024-01-02'::date::timestamp;
SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 'A0EEBC999C0B4EF8BB6D6BB9BD380A11'::uuid, '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'::uuid;
SELECT 'not-a-uuid'::uuid;
SELECT '\x0102ff'::bytea, 'abc'::bytea, '\x'::bytea;
SELECT CAST(42 AS text), CAST('42' AS integer), CAST(1.99 AS integer), CAST(true AS integer), CAST(0 AS boolean);
SELECT 42::text || 'x', 1.5::text, 0.1::float8::text, true::text, '2024-01-02'::date::text;
SELECT NULL::int, NULL::text IS NULL, CAST(NULL AS date);
SELECT 1::float8::numeric, 0.1::float8::numeric, (1.0/3)::float8::numeric;
SELECT 12345.6789::numeric(10,0), 0.00001::numeric, -0.0::numeric;
SELECT 2147483647 + 1;
SELECT 9223372036854775807::bigint + 1;
SELECT (-32768)::smallint - 1::smallint;
SELECT 1e308::float8 * 10;
SELECT 5 / 0;
SELECT 5.0 / 0;
SELECT 5 % 0;
SELECT 5::float8 / 0;
CREATE TABLE typed (
    id integer PRIMARY KEY,
    s smallint,
    b bigint,
    n numeric(8,3),
    nu numeric,
    r real,
    d double precision,
    t text,
    v varchar(5),
    c char(4),
    f boolean,
    day date,
    ts timestamp,
    tz timestamptz,
    u uuid,
    raw bytea
);
INSERT INTO typed VALUES (1, 1, 10000000000, 1.5, 123.456789, 0.1, 0.1, 'text', 'vc', 'ch', true, '2024-01-02', '2024-01-02 03:04:05', '2024-01-02 03:04:05+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef');
INSERT INTO typed VALUES (2, -2, -5, -0.0005, 1e10, 1e-3, 1e100, '', 'abcde', 'a', false, '1970-01-01', '1999-12-31 23:59:59.999999', '2000-01-01 12:00:00-08', '00000000-0000-0000-0000-000000000000', '');
INSERT INTO typed VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM typed ORDER BY id;
SELECT id, n * 2, nu / 3, r * 2, d + 1, t || v, c || 'x', day + 1, f AND true FROM typed ORDER BY id;
INSERT INTO typed (id, v) VALUES (4, 'toolong');
INSERT INTO typed (id, v) VALUES (5, 'five     ');
INSERT INTO typed (id, c) VALUES (6, 'abcde');
INSERT INTO typed (id, n) VALUES (7, 123456.7);
INSERT INTO typed (id, n) VALUES (8, 12345.6785);
INSERT INTO typed (id, s) VALUES (9, 40000);
INSERT INTO typed (id, u) VALUES (10, 'zzz');
INSERT INTO typed (id, day) VALUES (11, '2023-13-01');
INSERT INTO typed (id, f) VALUES (12, 'sure');
INSERT INTO typed (id, r) VALUES (13, 1.23456789);
INSERT INTO typed (id, b) VALUES (14, '12');
INSERT INTO typed (id, t) VALUES (15, 42);
INSERT INTO typed (id, s) VALUES (16, 1.5);
INSERT INTO typed (id, f) VALUES (17, 1);
SELECT id, v, c, n, s, r, b, t FROM typed WHERE id >= 4 ORDER BY id;
SELECT id FROM typed WHERE c = 'ch' ORDER BY id;
SELECT id FROM typed WHERE c = 'ch  ' ORDER BY id;
SELECT id FROM typed WHERE day = '2024-01-02' ORDER BY id;
SELECT id FROM typed WHERE ts > '2000-01-01' ORDER BY id;
SELECT id FROM typed WHERE tz = '2000-01-01 20:00:00+00' ORDER BY id;
SELECT id FROM typed WHERE u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11';
SELECT id FROM typed WHERE raw = '\xdeadbeef';
SELECT id FROM typed WHERE n > 1 ORDER BY id;
SELECT id FROM typed WHERE nu = 10000000000 ORDER BY id;
SELECT id, day < ts, ts < tz FROM typed WHERE id IN (1, 2) ORDER BY id;
SELECT max(n), min(nu), sum(n), avg(d), max(day), min(ts), max(u::text), count(raw) FROM typed;
SELECT length(raw), octet_length(t), length(c), octet_length('héllo') FROM typed WHERE id = 1;
DROP TABLE typed;
