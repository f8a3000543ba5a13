def main():
    return "no arguments needed"
