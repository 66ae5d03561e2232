"""Sen portal service:
the web pages for clinic staff, doctors, cashiers and the health department, and the reporting read model.
"""
