import json, re, sys
STOP = set("the a an of to in and or for on at by with from as is are was were be been it its this that these those he she they we you i his her their our not but has have had will would can could said says new after over says say".split())
def content(s): return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in STOP and len(w) > 2}
rows = [json.loads(l) for l in open(sys.argv[1] + '/predictions.jsonl')]
about = sum(bool(content(r['hypothesis']) & content(r['source'])) for r in rows) / len(rows)
sc = json.load(open(sys.argv[1] + '/scores.json'))['scores']
print(f"{sys.argv[1]}: rouge1 {sc['rouge']['details']['rouge1']:.2f} rougeL {sc['rouge']['score']:.2f} bleu {sc['bleu']['score']:.2f} about {about:.2f} | " + " || ".join(r['hypothesis'] for r in rows[:4]))
