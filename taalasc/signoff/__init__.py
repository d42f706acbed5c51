"""Sign-off: the PDK's own DRC decks and an LVS-style extraction over a compile's dies.

decks.py   find the PDK's KLayout DRC decks and run them in the KLayout application
rdb.py     read a KLayout marker database (.lyrdb): categories and marker counts
lvs.py     connectivity of every bit site (klayout.db LayoutToNetlist): which rail each
           gate input reaches
sites.py   those rails compared with the via-position decoder, site by site: findings
           named by tensor and element or strap
report.py  the per-rule table, the findings, metrics under OpenLane 2's names
run.py     `taalasc signoff`: all of the above into one new output folder
"""
