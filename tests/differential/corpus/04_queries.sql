-- SELECT: filters, ordering, limits, DISTINCT, aggregates, GROUP BY/HAVING.
CREATE TABLE emp (id int PRIMARY KEY, name text NOT NULL, dept text, salary numeric(10,2), age int, active boolean, hired date);
INSERT INTO emp VALUES
  (1, 'alice', 'eng', 120000, 34, true, '2019-03-01'),
  (2, 'bob', 'eng', 95000.50, 28, true, '2021-07-15'),
  (3, 'carol', 'sales', 70000, 45, false, '2015-01-20'),
  (4, 'dave', 'sales', NULL, 39, true, '2018-11-11'),
  (5, 'erin', NULL, 50000, NULL, NULL, NULL),
  (6, 'frank', 'ops', 65000, 51, true, '2010-06-30'),
  (7, 'grace', 'eng', 130000.25, 41, false, '2012-02-29'),
  (8, 'heidi', 'ops', 65000, 23, true, '2023-09-01');
SELECT * FROM emp ORDER BY id;
SELECT name FROM emp WHERE dept = 'eng' ORDER BY name;
SELECT name FROM emp WHERE dept <> 'eng';
SELECT name FROM emp WHERE dept IS NULL OR age IS NULL;
SELECT name FROM emp WHERE salary > 66000 AND active;
SELECT name FROM emp WHERE NOT active;
SELECT name FROM emp WHERE age BETWEEN 30 AND 45 ORDER BY age DESC;
SELECT name FROM emp WHERE name LIKE '%a%' ORDER BY 1;
SELECT name FROM emp WHERE name ILIKE 'A%' OR name LIKE '_r%';
SELECT name FROM emp WHERE id IN (2, 4, 6, 99);
SELECT name FROM emp WHERE id NOT IN (2, 4, 6) ORDER BY id;
SELECT name FROM emp WHERE hired >= '2019-01-01' ORDER BY hired;
SELECT name FROM emp WHERE id = 3;
SELECT name FROM emp WHERE id = 3 AND id = 4;
SELECT name FROM emp WHERE id > 6 OR id < 2 ORDER BY id;
SELECT name FROM emp WHERE id >= 3 AND id <= 5 ORDER BY id;
SELECT id, name, salary FROM emp ORDER BY salary DESC, id;
SELECT id, name, salary FROM emp ORDER BY salary ASC NULLS FIRST, id;
SELECT id, name, salary FROM emp ORDER BY salary DESC NULLS LAST, id DESC;
SELECT id, dept FROM emp ORDER BY dept NULLS FIRST, id;
SELECT id, age FROM emp ORDER BY age DESC, id LIMIT 3;
SELECT id FROM emp ORDER BY id LIMIT 3 OFFSET 2;
SELECT id FROM emp ORDER BY id OFFSET 6;
SELECT id FROM emp ORDER BY id LIMIT 0;
SELECT id FROM emp ORDER BY id DESC LIMIT ALL;
SELECT id, name FROM emp ORDER BY 2 DESC LIMIT 2;
SELECT id AS k, name FROM emp ORDER BY k DESC LIMIT 2;
SELECT id FROM emp ORDER BY length(name), id;
SELECT id FROM emp ORDER BY -age NULLS LAST, id;
SELECT DISTINCT dept FROM emp;
SELECT DISTINCT dept, active FROM emp ORDER BY dept, active;
SELECT DISTINCT salary FROM emp ORDER BY salary;
SELECT count(*), count(dept), count(DISTINCT dept), count(salary) FROM emp;
SELECT sum(salary), avg(salary), min(salary), max(salary) FROM emp;
SELECT sum(age), avg(age), min(age), max(age) FROM emp;
SELECT min(name), max(name), min(hired), max(hired) FROM emp;
SELECT bool_and(active), bool_or(active) FROM emp;
SELECT dept, count(*) FROM emp GROUP BY dept;
SELECT dept, count(*), sum(salary), avg(age) FROM emp GROUP BY dept ORDER BY dept;
SELECT dept, count(*) AS n FROM emp GROUP BY dept HAVING count(*) > 1 ORDER BY n DESC, dept;
SELECT dept, max(salary) FROM emp WHERE active GROUP BY dept ORDER BY 1;
SELECT dept, active, count(*) FROM emp GROUP BY dept, active ORDER BY dept, active;
SELECT dept IS NULL, count(*) FROM emp GROUP BY dept IS NULL ORDER BY 1;
SELECT length(name) AS len, count(*) FROM emp GROUP BY len ORDER BY len;
SELECT length(name), count(*) FROM emp GROUP BY 1 ORDER BY 1;
SELECT count(*) FROM emp WHERE id > 100;
SELECT sum(salary), max(name) FROM emp WHERE id > 100;
SELECT dept, count(*) FROM emp WHERE id > 100 GROUP BY dept;
SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE age > 40) FROM emp;
SELECT dept, string_agg(name, ',') FROM emp WHERE dept = 'ops' GROUP BY dept;
SELECT avg(salary)::numeric(10,2), round(avg(age), 1) FROM emp;
SELECT sum(id * 2), sum(age) / count(age), max(salary) - min(salary) FROM emp;
SELECT count(*) + 1, 'x' || count(*) FROM emp;
SELECT dept, sum(salary) FROM emp GROUP BY dept HAVING sum(salary) > 100000 ORDER BY 2;
SELECT name, dept FROM emp GROUP BY dept;
SELECT name FROM emp HAVING count(*) > 1;
SELECT count(*) FROM emp HAVING count(*) > 1;
SELECT sum(name) FROM emp;
SELECT avg(active) FROM emp;
SELECT count(count(*)) FROM emp;
SELECT id FROM emp WHERE count(*) > 1;
SELECT DISTINCT dept FROM emp ORDER BY age;
SELECT name FROM emp ORDER BY 9;
SELECT nosuch FROM emp;
SELECT emp.nosuch FROM emp;
SELECT x.id FROM emp;
SELECT e.id, e.name FROM emp e WHERE e.id < 3 ORDER BY e.id;
SELECT e.id FROM emp AS e WHERE emp.id = 1;
SELECT * FROM nosuchtable;
SELECT id FROM emp LIMIT -1;
SELECT id FROM emp OFFSET -1;
SELECT id FROM emp LIMIT 'x';
SELECT 1 FROM emp WHERE id = 1;
SELECT * FROM emp WHERE salary = 65000 ORDER BY id;
SELECT * FROM emp WHERE salary = 65000.00 ORDER BY id;
SELECT * FROM emp WHERE name = 'alice' AND dept = 'eng';
SELECT id, name FROM emp WHERE id IN (1, 2) FOR UPDATE;
SELECT dept, count(*) FROM emp GROUP BY dept FOR UPDATE;
SELECT age % 10 AS bucket, count(*) FROM emp WHERE age IS NOT NULL GROUP BY age % 10 ORDER BY bucket;
SELECT CASE WHEN salary >= 100000 THEN 'high' WHEN salary >= 60000 THEN 'mid' ELSE 'low' END AS band, count(*) FROM emp GROUP BY band ORDER BY band;
SELECT coalesce(dept, 'none') AS d, count(*) FROM emp GROUP BY coalesce(dept, 'none') ORDER BY d;
SELECT extract(year from hired) AS y, count(*) FROM emp WHERE hired IS NOT NULL GROUP BY y ORDER BY y;
